"""The CNI runtime: configs (pure), results (pure) and the plugin executor."""
