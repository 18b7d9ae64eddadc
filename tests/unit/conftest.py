"""The unit tier: pure tests; no root, no cluster, no marker.

A test here that asks for another tier's fixture (`node_host`, `cluster`, `kube`,
`namespace`, `real_cluster`, ...) is refused at collection (tests/conftest.py): one that
needs root or a cluster goes into that tier's folder.
"""
