"""The CNI executor against the real Debian CNI plugins in real network namespaces.

A small recording plugin (written into a temporary plugin dir) shows exactly
what the executor sends: environment, stdin, order of calls. All addresses
are in 10.99.0.0/16, ipMasq is off, bridges are not gateways, and every
namespace, bridge and dummy link made here is removed again.
"""

from __future__ import annotations

import json
import os
import secrets
import stat
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from netshift.cni.config import (
    CniConfigError,
    CniError,
    CniTimeoutError,
    ConfList,
    RuntimeConf,
    k8s_cni_args,
    load_conflist,
)
from netshift.cni.executor import CallTiming, CniExecutor
from netshift.cni.results import (
    result_dns,
    result_gateways,
    result_ips,
    result_mac,
    result_mtu,
    result_routes,
)
from support.builders import unique
from support.netns import (
    delete_netns,
    dummy_link,
    host_link_cleanup,
    host_link_exists,
    host_local_allocations,
    links_in,
    netns,
    netns_path,
)
from support.require import CNI_DIR, needs_node_host

# ----------------------------------------------------------------------------- fixtures

RECORDER = """#!{python}
import json, os, sys, time
cmd = os.environ.get("CNI_COMMAND")
raw = sys.stdin.read()
if cmd == "VERSION":
    print(json.dumps({{"cniVersion": "1.1.0",
                      "supportedVersions": ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]}}))
    sys.exit(0)
conf = json.loads(raw)
env = {{k: v for k, v in os.environ.items() if k.startswith("CNI_")}}
with open({log!r}, "a") as fh:
    fh.write(json.dumps({{"plugin": os.path.basename(sys.argv[0]), "pid": os.getpid(),
                         "env": env, "conf": conf}}) + "\\n")
fake = conf.get("fake", {{}}).get(cmd, {{}})
if "sleep" in fake:
    time.sleep(fake["sleep"])
if "stderr" in fake:
    sys.stderr.write(fake["stderr"])
if "stdout" in fake:
    sys.stdout.write(fake["stdout"])
    sys.exit(fake.get("exit", 0))
if "error" in fake:
    print(json.dumps(fake["error"]))
    sys.exit(1)
if "signal" in fake:
    os.kill(os.getpid(), fake["signal"])
if cmd == "ADD":
    result = conf.get("prevResult") or {{"cniVersion": conf["cniVersion"], "interfaces": [], "ips": []}}
    result = dict(result)
    result["interfaces"] = list(result.get("interfaces", [])) + [
        {{"name": os.path.basename(sys.argv[0]) + "-" + os.environ["CNI_IFNAME"],
          "sandbox": os.environ["CNI_NETNS"]}}]
    print(json.dumps(result))
"""


class Recorder:
    """A temporary plugin dir with recording plugins, and what they saw."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.log = directory / "calls.jsonl"

    def add_plugin(self, name: str) -> None:
        path = self.dir / name
        path.write_text(RECORDER.format(python=sys.executable, log=str(self.log)))
        path.chmod(path.stat().st_mode | stat.S_IXUSR)

    def calls(self) -> list[dict[str, Any]]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines()]

    def clear(self) -> None:
        if self.log.exists():
            self.log.unlink()


@pytest.fixture
def recorder(tmp_path: Path) -> Recorder:
    plugin_dir = tmp_path / "plugins"
    plugin_dir.mkdir()
    rec = Recorder(plugin_dir)
    for name in ("rec-a", "rec-b", "rec-c"):
        rec.add_plugin(name)
    return rec


@pytest.fixture
def ns() -> Iterator[str]:
    with netns("nsc") as name:
        yield name


def pod_rt(ns_name: str, ifname: str = "net1", **kw: Any) -> RuntimeConf:
    return RuntimeConf(
        container_id="sandbox" + secrets.token_hex(6),
        netns=netns_path(ns_name),
        ifname=ifname,
        args=k8s_cni_args("team-a", "web-0", "infra123", "0c9d3b8e-1111-2222-3333-444455556666"),
        **kw,
    )


def fake_rt(ifname: str = "net1", **kw: Any) -> RuntimeConf:
    # The recording plugins never enter the namespace; the path only travels in CNI_NETNS.
    return RuntimeConf(
        container_id="c0ffee",
        netns="/proc/self/ns/net",
        ifname=ifname,
        args=[("K8S_POD_NAMESPACE", "team-a"), ("K8S_POD_NAME", "web-0")],
        **kw,
    )


def subnet() -> str:
    return f"10.99.{secrets.randbelow(250) + 1}"


def bridge_conf(bridge: str, data_dir: Path, net: str, **extra: Any) -> dict[str, Any]:
    return {
        "type": "bridge",
        "bridge": bridge,
        "isGateway": False,
        "ipMasq": False,
        "ipam": {
            "type": "host-local",
            "subnet": f"{net}.0/24",
            "dataDir": str(data_dir),
        },
        **extra,
    }


# ----------------------------------------------------------------------------- config loading


def test_single_conf_is_normalized_to_a_conflist() -> None:
    conf = load_conflist('{"cniVersion": "0.4.0", "name": "a", "type": "bridge", "bridge": "x"}')
    assert conf.name == "a"
    assert conf.cni_version == "0.4.0"
    assert conf.types == ("bridge",)
    assert conf.plugins[0]["bridge"] == "x"
    assert conf.disable_check is False


def test_missing_name_takes_the_nad_name() -> None:
    conf = load_conflist('{"cniVersion": "1.0.0", "plugins": [{"type": "bridge"}]}', "my-nad")
    assert conf.name == "my-nad"
    assert load_conflist('{"cniVersion": "1.0.0", "name": "own", "type": "x"}', "nad").name == "own"


def test_conflist_round_trips_through_json() -> None:
    conf = load_conflist(
        {
            "cniVersion": "1.0.0",
            "name": "n",
            "disableCheck": "true",
            "plugins": [{"type": "bridge"}, {"type": "tuning", "capabilities": {"mac": True}}],
        }
    )
    assert conf.disable_check is True
    assert load_conflist(conf.to_json()) == conf


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("not json", "not valid JSON"),
        ("[1]", "must be a JSON object"),
        ('{"name": "a", "type": "bridge"}', '"cniVersion" is missing'),
        ('{"cniVersion": "0.2.0", "name": "a", "type": "bridge"}', "0.2.0"),
        ('{"cniVersion": "1.0.0", "type": "bridge"}', "network name"),
        ('{"cniVersion": "1.0.0", "name": "../x", "type": "bridge"}', "network name"),
        ('{"cniVersion": "1.0.0", "name": "a", "plugins": []}', "non-empty list"),
        ('{"cniVersion": "1.0.0", "name": "a", "plugins": [{"bridge": "x"}]}', '"type" is missing'),
        ('{"cniVersion": "1.0.0", "name": "a", "type": "../../bin/sh"}', "not a plain plugin"),
        ('{"cniVersion": "1.0.0", "name": "a", "type": "/usr/bin/x"}', "not a plain plugin"),
        ('{"cniVersion": "1.0.0", "name": "a", "type": ".."}', "not a plain plugin"),
        ('{"cniVersion": "1.0.0", "name": "a", "type": "a\\u0000b"}', "not a plain plugin"),
        (
            '{"cniVersion": "1.0.0", "name": "a", "type": "bridge", "ipam": {"type": "/bin/sh"}}',
            "ipam",
        ),
        (
            '{"cniVersion": "1.0.0", "name": "a", "disableCheck": 3, "plugins": [{"type": "x"}]}',
            "disableCheck",
        ),
    ],
)
def test_bad_configs_are_refused(text: str, fragment: str) -> None:
    with pytest.raises(CniConfigError) as err:
        load_conflist(text)
    assert fragment in str(err.value)


# ----------------------------------------------------------------------------- refusal before running


def test_path_like_type_is_refused_and_nothing_runs(recorder: Recorder, tmp_path: Path) -> None:
    executor = CniExecutor([str(recorder.dir)])
    # A ConfList built by hand skips load_conflist's check; the executor checks again.
    relative = os.path.relpath(recorder.dir / "rec-a", recorder.dir)
    for bad in ("../plugins/rec-a", str(recorder.dir / "rec-a"), relative + "/"):
        conf = ConfList("n", "1.0.0", ({"type": "rec-b"}, {"type": bad}))
        with pytest.raises(CniConfigError, match="not a plain plugin file name"):
            executor.add(conf, fake_rt())
    assert recorder.calls() == []


def test_unknown_plugin_is_refused_before_anything_runs(recorder: Recorder) -> None:
    executor = CniExecutor([str(recorder.dir)])
    conf = load_conflist(
        {"cniVersion": "1.0.0", "name": "n", "plugins": [{"type": "rec-a"}, {"type": "nosuch"}]}
    )
    with pytest.raises(CniConfigError, match="'nosuch' not found") as err:
        executor.add(conf, fake_rt())
    assert str(recorder.dir) in str(err.value)
    assert recorder.calls() == []


def test_unknown_ipam_plugin_is_refused(recorder: Recorder) -> None:
    executor = CniExecutor([str(recorder.dir)])
    conf = load_conflist(
        {"cniVersion": "1.0.0", "name": "n", "type": "rec-a", "ipam": {"type": "nosuch-ipam"}}
    )
    with pytest.raises(CniConfigError, match=r"ipam.*nosuch-ipam"):
        executor.add(conf, fake_rt())
    assert recorder.calls() == []


def test_undeclared_capability_is_refused(recorder: Recorder) -> None:
    executor = CniExecutor([str(recorder.dir)])
    conf = load_conflist(
        {
            "cniVersion": "1.0.0",
            "name": "n",
            "plugins": [{"type": "rec-a", "capabilities": {"ips": True, "mac": False}}],
        }
    )
    with pytest.raises(CniConfigError, match=r"'mac', 'portMappings'.*declared: ips"):
        executor.add(
            conf, fake_rt(capability_args={"mac": "02:00:00:00:00:01", "portMappings": []})
        )
    assert recorder.calls() == []


@needs_node_host
def test_version_the_plugin_does_not_speak_is_refused(tmp_path: Path) -> None:
    executor = CniExecutor([CNI_DIR])
    conf = load_conflist(
        {"cniVersion": "1.1.0", "name": "n", "plugins": [bridge_conf("nsbx", tmp_path, subnet())]}
    )
    with pytest.raises(CniConfigError, match=r"plugin bridge supports only .*1\.0\.0") as err:
        executor.add(conf, RuntimeConf("c1", "/nonexistent", "net1"))
    assert err.value.code == 1
    assert [t.command for t in executor.last_timings] in ([], ["VERSION"])


def test_invalid_runtime_parameters_are_refused(recorder: Recorder) -> None:
    executor = CniExecutor([str(recorder.dir)])
    conf = load_conflist({"cniVersion": "1.0.0", "name": "n", "type": "rec-a"})
    for rt in (
        RuntimeConf("../x", "/proc/self/ns/net", "net1"),
        RuntimeConf("c1", "/proc/self/ns/net", "a/b"),
        RuntimeConf("c1", "/proc/self/ns/net", "sixteen-chars-xx"),
        RuntimeConf("c1", "", "net1"),
        RuntimeConf("c1", "/proc/self/ns/net", "net1", args=[("K", "a;b")]),
    ):
        with pytest.raises(CniConfigError):
            executor.add(conf, rt)
    assert recorder.calls() == []


# ----------------------------------------------------------------------------- what plugins receive


def test_add_sends_env_runtime_config_cni_args_and_chains_prev_result(recorder: Recorder) -> None:
    executor = CniExecutor([str(recorder.dir), "/nonexistent-dir"])
    conf = load_conflist(
        {
            "cniVersion": "1.0.0",
            "name": "blue",
            "plugins": [
                {"type": "rec-a", "capabilities": {"ips": True}, "args": {"cni": {"keep": 1}}},
                {
                    "type": "rec-b",
                    "name": "ignored",
                    "cniVersion": "0.3.1",
                    "capabilities": {"mac": True, "ips": False},
                },
            ],
        }
    )
    rt = RuntimeConf(
        container_id="c0ffee",
        netns="/var/run/netns/somewhere",
        ifname="net3",
        args=k8s_cni_args("team-a", "web-0", "infra9", "uid-1"),
        capability_args={"ips": ["10.99.0.5/24"], "mac": "02:00:00:00:00:05"},
        cni_args={"foo": "bar", "keep": 2},
    )
    result = executor.add(conf, rt)

    first, second = recorder.calls()
    assert first["plugin"] == "rec-a" and second["plugin"] == "rec-b"
    assert first["env"] == {
        "CNI_COMMAND": "ADD",
        "CNI_CONTAINERID": "c0ffee",
        "CNI_NETNS": "/var/run/netns/somewhere",
        "CNI_IFNAME": "net3",
        "CNI_PATH": f"{recorder.dir}:/nonexistent-dir",
        "CNI_ARGS": "IgnoreUnknown=1;K8S_POD_NAMESPACE=team-a;K8S_POD_NAME=web-0;"
        "K8S_POD_INFRA_CONTAINER_ID=infra9;K8S_POD_UID=uid-1",
    }
    assert second["env"] == first["env"]
    a, b = first["conf"], second["conf"]
    assert (a["name"], a["cniVersion"]) == ("blue", "1.0.0")
    assert (b["name"], b["cniVersion"]) == ("blue", "1.0.0")
    assert a["runtimeConfig"] == {"ips": ["10.99.0.5/24"]}
    assert b["runtimeConfig"] == {"mac": "02:00:00:00:00:05"}
    assert a["args"]["cni"] == {"keep": 2, "foo": "bar"}
    assert b["args"] == {"cni": {"foo": "bar", "keep": 2}}
    assert "prevResult" not in a
    assert b["prevResult"]["interfaces"] == [
        {"name": "rec-a-net3", "sandbox": "/var/run/netns/somewhere"}
    ]
    assert [i["name"] for i in result["interfaces"]] == ["rec-a-net3", "rec-b-net3"]
    # the executor never changes the caller's conflist
    assert "runtimeConfig" not in conf.plugins[0] and conf.plugins[0]["args"] == {
        "cni": {"keep": 1}
    }
    assert [(t.plugin, t.command) for t in executor.last_timings][-2:] == [
        ("rec-a", "ADD"),
        ("rec-b", "ADD"),
    ]
    assert all(isinstance(t, CallTiming) and t.ok and t.seconds > 0 for t in executor.last_timings)


def test_explicit_ignore_unknown_is_not_doubled(recorder: Recorder) -> None:
    executor = CniExecutor([str(recorder.dir)])
    conf = load_conflist({"cniVersion": "1.0.0", "name": "n", "type": "rec-a"})
    executor.add(
        conf, RuntimeConf("c1", "/x", "net1", args=[("IgnoreUnknown", "true"), ("A", "b")])
    )
    assert recorder.calls()[0]["env"]["CNI_ARGS"] == "IgnoreUnknown=true;A=b"


def test_check_sends_the_add_result_to_every_plugin(recorder: Recorder) -> None:
    executor = CniExecutor([str(recorder.dir)])
    conf = load_conflist(
        {"cniVersion": "1.0.0", "name": "n", "plugins": [{"type": "rec-a"}, {"type": "rec-b"}]}
    )
    added = {"cniVersion": "1.0.0", "ips": [{"address": "10.99.1.2/24"}]}
    assert executor.check(conf, fake_rt(), added) is True
    calls = recorder.calls()
    assert [c["plugin"] for c in calls] == ["rec-a", "rec-b"]
    assert all(c["env"]["CNI_COMMAND"] == "CHECK" for c in calls)
    assert all(c["conf"]["prevResult"] == added for c in calls)


def test_check_is_skipped_before_0_4_0_and_when_disabled(recorder: Recorder) -> None:
    executor = CniExecutor([str(recorder.dir)])
    old = load_conflist({"cniVersion": "0.3.1", "name": "n", "type": "rec-a"})
    off = load_conflist(
        {"cniVersion": "1.0.0", "name": "n", "disableCheck": True, "plugins": [{"type": "rec-a"}]}
    )
    assert executor.check(old, fake_rt(), {}) is False
    assert executor.check(off, fake_rt(), {}) is False
    assert recorder.calls() == []


def test_check_without_a_known_result_is_an_error(recorder: Recorder) -> None:
    executor = CniExecutor([str(recorder.dir)])
    conf = load_conflist({"cniVersion": "1.0.0", "name": "n", "type": "rec-a"})
    with pytest.raises(CniError, match="result of its ADD is not known"):
        executor.check(conf, fake_rt())


def test_del_runs_in_reverse_with_the_add_result(recorder: Recorder) -> None:
    executor = CniExecutor([str(recorder.dir)])
    conf = load_conflist(
        {"cniVersion": "1.0.0", "name": "n", "plugins": [{"type": "rec-a"}, {"type": "rec-b"}]}
    )
    added = {"cniVersion": "1.0.0", "ips": [{"address": "10.99.1.2/24"}]}
    executor.delete(conf, fake_rt(), added)
    calls = recorder.calls()
    assert [c["plugin"] for c in calls] == ["rec-b", "rec-a"]
    assert all(c["env"]["CNI_COMMAND"] == "DEL" for c in calls)
    assert all(c["conf"]["prevResult"] == added for c in calls)


def test_del_before_0_4_0_sends_no_prev_result(recorder: Recorder) -> None:
    executor = CniExecutor([str(recorder.dir)])
    conf = load_conflist({"cniVersion": "0.3.1", "name": "n", "type": "rec-a"})
    executor.delete(conf, fake_rt(), {"cniVersion": "0.3.1", "ips": []})
    assert "prevResult" not in recorder.calls()[0]["conf"]


def test_del_of_a_vanished_namespace_sends_empty_netns(recorder: Recorder) -> None:
    executor = CniExecutor([str(recorder.dir)])
    conf = load_conflist({"cniVersion": "1.0.0", "name": "n", "type": "rec-a"})
    executor.delete(conf, RuntimeConf("c1", "/var/run/netns/gone-" + secrets.token_hex(4), "net1"))
    assert recorder.calls()[0]["env"]["CNI_NETNS"] == ""


def test_del_keeps_going_and_reports_the_first_error(recorder: Recorder) -> None:
    executor = CniExecutor([str(recorder.dir)])
    conf = load_conflist(
        {
            "cniVersion": "1.0.0",
            "name": "n",
            "plugins": [
                {"type": "rec-a", "fake": {"DEL": {"error": {"code": 11, "msg": "busy"}}}},
                {"type": "nosuch"},
                {"type": "rec-b", "fake": {"DEL": {"error": {"code": 5, "msg": "io"}}}},
                {"type": "rec-c"},
            ],
        }
    )
    with pytest.raises(CniError) as err:
        executor.delete(conf, fake_rt())
    assert [c["plugin"] for c in recorder.calls()] == ["rec-c", "rec-b", "rec-a"]
    assert err.value.plugin == "rec-b" and err.value.code == 5
    assert str(err.value.other_errors[0]).startswith("CNI plugin 'nosuch' not found")
    assert err.value.other_errors[1].msg == "busy"


def test_failed_add_is_rolled_back_with_del(recorder: Recorder) -> None:
    executor = CniExecutor([str(recorder.dir)])
    conf = load_conflist(
        {
            "cniVersion": "1.0.0",
            "name": "n",
            "plugins": [
                {"type": "rec-a"},
                {"type": "rec-b", "fake": {"ADD": {"error": {"code": 7, "msg": "bad"}}}},
                {"type": "rec-c"},
            ],
        }
    )
    with pytest.raises(CniError, match="rec-b ADD failed"):
        executor.add(conf, fake_rt())
    seen = [(c["plugin"], c["env"]["CNI_COMMAND"]) for c in recorder.calls()]
    assert seen == [
        ("rec-a", "ADD"),
        ("rec-b", "ADD"),
        ("rec-c", "DEL"),
        ("rec-b", "DEL"),
        ("rec-a", "DEL"),
    ]
    recorder.clear()
    with pytest.raises(CniError):
        executor.add(conf, fake_rt(), rollback=False)
    assert [c["env"]["CNI_COMMAND"] for c in recorder.calls()] == ["ADD", "ADD"]


def test_result_cache_feeds_del_and_check(recorder: Recorder, tmp_path: Path) -> None:
    executor = CniExecutor([str(recorder.dir)], cache_dir=str(tmp_path / "cache"))
    conf = load_conflist({"cniVersion": "1.0.0", "name": "n", "type": "rec-a"})
    rt = fake_rt()
    result = executor.add(conf, rt)
    assert executor.cached_result(conf, rt) == result
    assert executor.check(conf, rt) is True
    executor.delete(conf, rt)
    check_call, del_call = recorder.calls()[1:]
    assert check_call["conf"]["prevResult"] == result
    assert del_call["conf"]["prevResult"] == result
    assert executor.cached_result(conf, rt) is None


# ----------------------------------------------------------------------------- failures


def test_plugin_error_object_becomes_cni_error(recorder: Recorder) -> None:
    executor = CniExecutor([str(recorder.dir)])
    conf = load_conflist(
        {
            "cniVersion": "1.0.0",
            "name": "n",
            "type": "rec-a",
            "fake": {"ADD": {"error": {"code": 7, "msg": "no master", "details": "eth9 missing"}}},
        }
    )
    with pytest.raises(CniError) as err:
        executor.add(conf, fake_rt(), rollback=False)
    assert (err.value.code, err.value.msg, err.value.details) == (7, "no master", "eth9 missing")
    assert (err.value.plugin, err.value.command) == ("rec-a", "ADD")
    assert str(err.value) == "CNI plugin rec-a ADD failed (code 7): no master: eth9 missing"


@pytest.mark.parametrize(
    ("fake", "fragment"),
    [
        ({"stdout": "oops not json", "stderr": "panic: boom"}, "printed no JSON result"),
        ({"stdout": "", "exit": 3, "stderr": "panic: boom"}, "exited with status 3"),
        ({"signal": 9, "stderr": "panic: boom"}, "killed by SIGKILL"),
    ],
)
def test_garbage_and_crashes_become_cni_errors_with_stderr(
    recorder: Recorder, fake: dict[str, Any], fragment: str
) -> None:
    executor = CniExecutor([str(recorder.dir)])
    conf = load_conflist(
        {"cniVersion": "1.0.0", "name": "n", "type": "rec-a", "fake": {"ADD": fake}}
    )
    with pytest.raises(CniError) as err:
        executor.add(conf, fake_rt(), rollback=False)
    assert err.value.code is None
    assert fragment in str(err.value)
    assert "panic: boom" in str(err.value)


def test_plugin_that_hangs_is_killed_after_the_timeout(recorder: Recorder) -> None:
    executor = CniExecutor([str(recorder.dir)], timeout=1.0)
    conf = load_conflist(
        {"cniVersion": "1.0.0", "name": "n", "type": "rec-a", "fake": {"ADD": {"sleep": 60}}}
    )
    executor.plugin_versions("rec-a")  # keep interpreter start-up out of the timed call
    start = time.monotonic()
    with pytest.raises(CniTimeoutError) as err:
        executor.add(conf, fake_rt(), rollback=False)
    assert time.monotonic() - start < 10
    assert str(err.value) == "CNI plugin rec-a ADD failed: timed out after 1s (killed)"
    pid = recorder.calls()[0]["pid"]
    assert not os.path.exists(f"/proc/{pid}") or "Z" in Path(f"/proc/{pid}/stat").read_text()
    assert executor.last_timings[-1].ok is False


# ----------------------------------------------------------------------------- results


RESULT_031 = {
    "cniVersion": "0.3.1",
    "interfaces": [
        {"name": "cni0", "mac": "aa:00:00:00:00:01"},
        {"name": "veth1", "mac": "aa:00:00:00:00:02"},
        {"name": "net1", "mac": "aa:00:00:00:00:03", "sandbox": "/var/run/netns/x"},
    ],
    "ips": [
        {"version": "4", "address": "10.99.3.4/24", "gateway": "10.99.3.1", "interface": 2},
        {"version": "6", "address": "fd99::4/64", "interface": 2},
        {"version": "4", "address": "10.99.3.1/24", "interface": 0},
    ],
    "routes": [{"dst": "10.99.0.0/16", "gw": "10.99.3.1"}, {"gw": "no dst"}],
    "dns": {"nameservers": ["10.99.3.53"]},
}

RESULT_100 = {
    "cniVersion": "1.0.0",
    "interfaces": [{"name": "net2", "mac": "aa:00:00:00:00:09", "mtu": 1400, "sandbox": "/x"}],
    "ips": [{"address": "10.99.9.9/24", "gateway": "10.99.9.1", "interface": 0}],
    "routes": [{"dst": "0.0.0.0/0", "gw": "10.99.9.1"}],
}


def test_result_readers_pick_the_sandbox_interface() -> None:
    assert result_ips(RESULT_031, "net1") == ["10.99.3.4/24", "fd99::4/64"]
    assert result_ips(RESULT_031, "cni0") == ["10.99.3.1/24"]
    assert result_ips(RESULT_031, "eth0") == []
    assert result_ips(RESULT_031) == ["10.99.3.4/24", "fd99::4/64", "10.99.3.1/24"]
    assert result_gateways(RESULT_031, "net1") == ["10.99.3.1"]
    assert result_mac(RESULT_031, "net1") == "aa:00:00:00:00:03"
    assert result_mac(RESULT_031, "eth0") is None
    assert result_routes(RESULT_031) == [{"dst": "10.99.0.0/16", "gw": "10.99.3.1"}]
    assert result_dns(RESULT_031) == {"nameservers": ["10.99.3.53"]}
    assert result_ips(RESULT_100, "net2") == ["10.99.9.9/24"]
    assert result_mtu(RESULT_100, "net2") == 1400
    assert result_mtu(RESULT_031, "net1") is None


def test_result_ips_without_interface_index_count_for_any_interface() -> None:
    ipam_only = {"cniVersion": "1.0.0", "ips": [{"address": "10.99.5.5/24"}]}
    assert result_ips(ipam_only, "net1") == ["10.99.5.5/24"]
    assert result_mac(ipam_only, "net1") is None
    assert result_routes({}) == [] and result_dns({"dns": 3}) == {}


# ----------------------------------------------------------------------------- real plugins


@needs_node_host
def test_bridge_add_check_del_in_a_real_namespace(ns: str, tmp_path: Path) -> None:
    bridge, net, store = unique("nsb"), subnet(), tmp_path / "ipam"
    executor = CniExecutor([CNI_DIR])
    conf = load_conflist(
        {"cniVersion": "1.0.0", "plugins": [bridge_conf(bridge, store, net)]}, "test-bridge"
    )
    rt = pod_rt(ns)
    with host_link_cleanup(bridge):
        result = executor.add(conf, rt)
        add_time = sum(t.seconds for t in executor.last_timings if t.command == "ADD")

        link = links_in(ns)["net1"]
        assert link.kind == "veth"
        (address,) = result_ips(result, "net1")
        assert address.startswith(f"{net}.") and address.endswith("/24")
        assert link.addresses == [address]
        assert result_mac(result, "net1") == link.mac
        assert host_local_allocations(str(store)) == [address.split("/")[0]]
        assert host_link_exists(bridge)

        assert executor.check(conf, rt, result) is True

        executor.delete(conf, rt, result)
        del_time = sum(t.seconds for t in executor.last_timings)
        assert "net1" not in links_in(ns)
        assert host_local_allocations(str(store)) == []
    print(f"bridge+host-local ADD {add_time * 1000:.1f} ms, DEL {del_time * 1000:.1f} ms")


@needs_node_host
def test_del_twice_and_after_the_namespace_is_gone(tmp_path: Path) -> None:
    bridge, net, store = unique("nsb"), subnet(), tmp_path / "ipam"
    executor = CniExecutor([CNI_DIR])
    conf = load_conflist({"cniVersion": "0.4.0", "name": "gone", **bridge_conf(bridge, store, net)})
    with host_link_cleanup(bridge), netns("nsg") as ns_name:
        rt = pod_rt(ns_name)
        result = executor.add(conf, rt)
        assert len(host_local_allocations(str(store))) == 1
        delete_netns(ns_name)
        executor.delete(conf, rt, result)
        assert host_local_allocations(str(store)) == []
        executor.delete(conf, rt, result)  # already gone: still fine
        executor.delete(conf, rt, None)


@needs_node_host
def test_conflist_chains_prev_result_through_tuning(ns: str, tmp_path: Path) -> None:
    bridge, net, store = unique("nsb"), subnet(), tmp_path / "ipam"
    executor = CniExecutor([CNI_DIR])
    conf = load_conflist(
        {
            "cniVersion": "1.0.0",
            "name": "tuned",
            "plugins": [
                bridge_conf(bridge, store, net),
                {
                    "type": "tuning",
                    "capabilities": {"mac": True},
                    "sysctl": {"net.ipv4.conf.net1.arp_ignore": "1"},
                    "dataDir": str(tmp_path / "tuning"),
                },
            ],
        }
    )
    mac = "02:99:00:" + ":".join(f"{b:02x}" for b in secrets.token_bytes(3))
    rt = pod_rt(ns, capability_args={"mac": mac})
    with host_link_cleanup(bridge):
        result = executor.add(conf, rt)
        # tuning found net1 only through prevResult, and reports the mac it set
        assert result_mac(result, "net1") == mac
        assert links_in(ns)["net1"].mac == mac
        assert result_ips(result, "net1") == links_in(ns)["net1"].addresses
        assert executor.check(conf, rt, result) is True
        executor.delete(conf, rt, result)
        assert "net1" not in links_in(ns)
        assert host_local_allocations(str(store)) == []


@needs_node_host
def test_macvlan_on_a_dummy_master(ns: str, tmp_path: Path) -> None:
    net, store = subnet(), tmp_path / "ipam"
    executor = CniExecutor([CNI_DIR])
    with dummy_link() as master:
        conf = load_conflist(
            {
                "cniVersion": "0.3.1",
                "name": "mv",
                "type": "macvlan",
                "master": master,
                "mode": "bridge",
                "ipam": {"type": "host-local", "subnet": f"{net}.0/24", "dataDir": str(store)},
            }
        )
        rt = pod_rt(ns, ifname="net2")
        result = executor.add(conf, rt)
        link = links_in(ns)["net2"]
        assert link.kind == "macvlan"
        assert link.addresses == result_ips(result, "net2")
        assert executor.check(conf, rt, result) is False  # 0.3.1 has no CHECK
        executor.delete(conf, rt, result)
        assert "net2" not in links_in(ns)
        assert host_local_allocations(str(store)) == []


@needs_node_host
def test_static_ipam_takes_ips_from_runtime_config(ns: str) -> None:
    bridge, net = unique("nsb"), subnet()
    executor = CniExecutor([CNI_DIR])
    conf = load_conflist(
        {
            "cniVersion": "1.0.0",
            "name": "fixed",
            "type": "bridge",
            "bridge": bridge,
            "isGateway": False,
            "ipMasq": False,
            "capabilities": {"ips": True},
            "ipam": {"type": "static"},
        }
    )
    rt = pod_rt(ns, capability_args={"ips": [f"{net}.77/24"]})
    with host_link_cleanup(bridge):
        result = executor.add(conf, rt)
        assert result_ips(result, "net1") == [f"{net}.77/24"]
        assert links_in(ns)["net1"].addresses == [f"{net}.77/24"]
        executor.delete(conf, rt, result)


@needs_node_host
def test_cni_args_reach_a_real_plugin_that_ignores_them(ns: str, tmp_path: Path) -> None:
    bridge, net, store = unique("nsb"), subnet(), tmp_path / "ipam"
    executor = CniExecutor([CNI_DIR])
    conf = load_conflist({"cniVersion": "1.0.0", "name": "args", **bridge_conf(bridge, store, net)})
    rt = pod_rt(ns, cni_args={"team": "a", "tier": 1})
    with host_link_cleanup(bridge):
        result = executor.add(conf, rt)
        assert result_ips(result, "net1")
        executor.delete(conf, rt, result)


@needs_node_host
def test_real_plugin_error_is_reported_and_rolled_back(ns: str, tmp_path: Path) -> None:
    bridge, store = unique("nsb"), tmp_path / "ipam"
    executor = CniExecutor([CNI_DIR])
    conf = load_conflist(
        {
            "cniVersion": "1.0.0",
            "name": "broken",
            **bridge_conf(bridge, store, "10.99.300"),  # subnet 10.99.300.0/24 is no subnet
        }
    )
    with host_link_cleanup(bridge), pytest.raises(CniError) as err:
        executor.add(conf, pod_rt(ns))
    assert err.value.plugin == "bridge" and err.value.command == "ADD"
    assert err.value.code == 999
    assert str(err.value).startswith("CNI plugin bridge ADD failed (code 999): ")
    assert "10.99.300.0/24" in str(err.value)
    assert [t.command for t in executor.last_timings][-2:] == ["ADD", "DEL"]
    assert "net1" not in links_in(ns)
