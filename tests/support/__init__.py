"""What the test tiers share (tests/ is on pytest's path: `from support.builders import ...`).

- `require`: "skip on a developer machine, fail in CI" and each tier's prerequisites.
- `timeouts`: every test's time limit, by tier, and the named larger ones.
- `builders`: objects the tests make (names, NADs, CNI networks, NetworkProfiles).
- `netns`: real network namespaces, links and cgroups for the node tier.
- `cri`: a private containerd (the node tier's real CRI runtime).
- `agent`: the agent as a process and the per-test networks of the cluster tier.
- `controller`: rollout builders, the stand-in agent, the controller as a process.
- `liveswitch`: what the live-switch tests of the cluster tier share.
- `realnode`: pods, networks and probes of the real-node tier.

The fixtures themselves live in each tier's conftest.py.
"""
