"""The benchmarks under bench/ keep working: each runs here with tiny sizes and must print
well-formed figures. No timing is asserted (these machines are noisy): only that the figures are
there and plausible, so a benchmark cannot rot unnoticed between the runs whose figures we report."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]


def _run(args: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "MODELDEPLOY_TEST_KUBECONFIG"}
    proc = subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, timeout=timeout, cwd=REPO, env=env
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-6000:]
    return proc


@pytest.mark.triton
def test_runtime_bench_throughput_prints_its_ratio(tmp_path: Path) -> None:
    out = tmp_path / "figures.json"
    proc = _run(
        ["bench/runtime_bench.py", "--only", "throughput", "--seconds", "1", "--concurrency", "4",
         "--json", str(out)],
        timeout=600,
    )  # fmt: skip
    t = json.loads(out.read_text())["throughput"]
    assert t["device"] == "cpu" and t["concurrency"] == 4
    assert t["on_rps"] > 0 and t["off_rps"] > 0
    assert t["on_vs_off"] == pytest.approx(t["on_rps"] / t["off_rps"])
    assert "dynamic batching on" in proc.stdout and "-> ratio" in proc.stdout


@pytest.mark.cluster
def test_reconcile_bench_on_its_own_cluster() -> None:
    proc = _run(
        [
            "bench/reconcile.py",
            "--n",
            "3",
            "--quiet-seconds",
            "6",
            "--resync-seconds",
            "5",
            "--timeout",
            "240",
            "--operator-env",
            "PYTHONMALLOC=malloc",
            "--controller-qps",
            "100",
        ],
        timeout=600,
    )
    result = json.loads(proc.stdout[proc.stdout.index("{") :])
    assert result["n"] == 3 and result["ready"] == 3
    # the stores answer every list until Ready (a LIST per reconcile once went to the API server);
    # a GET only confirms a child's name is free where the names watch had not listed yet
    # (test_operator_cluster.py asserts none once it has)
    reads = result["operator_reads_until_ready"]
    assert not [k for k in reads if k.startswith("list")], reads
    assert all(v <= 3 for v in reads.values()), reads
    assert result["all_ready_s"] > 0
    for phase in ("apply_to_ready_s", "operator_reaction_s", "pods_start_s", "status_lag_s"):
        assert result[phase]["p99"] >= result[phase]["p50"] > 0, (phase, result[phase])
    # the phases of one object fit in its whole apply -> Ready
    assert result["operator_reaction_s"]["p50"] < result["apply_to_ready_s"]["p99"]
    assert result["operator_writes_per_md_until_ready"] > 0  # read from the API server's audit log
    assert any(k.startswith("patch deployments") for k in result["operator_writes_by_kind"])
    assert sum(result["status_writes_per_md"].values()) == 3  # every object got its status written
    assert result["operator_writes_in_quiet_period"] == 0
    assert isinstance(result["operator_requests_in_quiet_period"], dict)
    assert result["operator_peak_rss_mib"] >= result["operator_rss_idle_mib"] > 0
    assert result["operator_rss_after_delete_mib"] > 0
    # VmHWM only grows: the peak including the deletion is at least the peak at Ready and after it
    assert result["operator_peak_rss_incl_delete_mib"] >= max(
        result["operator_peak_rss_mib"], result["operator_rss_after_delete_mib"]
    )
    assert result["operator_rss_after_delete_over_idle_mib"] == pytest.approx(
        result["operator_rss_after_delete_mib"] - result["operator_rss_idle_mib"], abs=0.11
    )
    # where the RSS lies, from smaps: the parts add up to it (read a moment apart: a little slack)
    for when, rss in (("idle", "operator_rss_idle_mib"), ("after_delete", "operator_rss_after_delete_mib")):
        parts = result["operator_memory_map_mib"][when]
        assert set(parts) == {"heap", "anon", "files"} and min(parts.values()) > 0
        assert sum(parts.values()) == pytest.approx(result[rss], rel=0.1)
    held = result["operator_cache_objects_after_delete"]
    ours = {k: v for k, v in held.items() if not k.endswith(":names")}
    assert {"ModelDeployment", "Deployment", "Pod"} <= set(ours) and not any(ours.values()), held
    # the names stores keep anyone's names: after the deletion only the namespace's own
    # kube-root-ca.crt ConfigMap (the controller-manager's) is left in them
    assert {k: v for k, v in held.items() if k.endswith(":names") and v} == {"ConfigMap:names": 1}, held
    assert result["operator_cpu_s_until_ready"] > 0
    assert result["operator_env"] == {"PYTHONMALLOC": "malloc"}
    # the floor: the same children written by a plain client in the same run
    assert result["floor_all_available_s"] > 0 and result["floor_writes_per_object"] >= 3
    assert result["operator_vs_floor"] == pytest.approx(
        result["all_ready_s"] / result["floor_all_available_s"], abs=0.01
    )
    # every writer's writes per object (audit log): the operator's own are among them; the floor's
    # client wrote each child once; the controllers and KWOK started pods in both
    ops, floor = result["api_writes_per_md_until_ready"], result["floor_api_writes_per_object"]
    assert ops["by_writer"]["operator"] == result["operator_writes_per_md_until_ready"], ops
    assert ops["by_writer"]["bench"] >= 1, ops  # the creates
    assert floor["by_writer"]["bench"] == result["floor_writes_per_object"], floor
    for side in (ops, floor):
        assert side["total"] == pytest.approx(sum(side["by_writer"].values()), abs=0.05), side
        assert {"deployment-controller", "replicaset-controller"} <= set(side["by_writer"]), side
    assert result["api_writes_vs_floor"] == pytest.approx(ops["total"] / floor["total"], abs=0.01)
    # the control plane's CPU until all Ready (and the floor's until all available), per process:
    # the API server served every write and watch of the run, so it used some
    components = {"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok"}
    for cpu in (result["cluster_cpu_s_until_ready"], result["floor_cluster_cpu_s_until_available"]):
        assert set(cpu) == components and cpu["kube-apiserver"] > 0 and min(cpu.values()) >= 0, cpu


@pytest.mark.cluster
def test_reconcile_bench_alternates_rounds_against_a_baseline() -> None:
    """``--rounds 2 --baseline-ref``: this tree and the baseline measured twice, ABBA, each pair's
    ratio and the ratio of the totals reported; the top-level figures are the first round's."""
    proc = _run(
        ["bench/reconcile.py", "--n", "2", "--quiet-seconds", "2", "--timeout", "240", "--no-floor",
         "--controller-qps", "100", "--baseline-ref", "HEAD", "--rounds", "2"],
        timeout=900,
    )  # fmt: skip
    result = json.loads(proc.stdout[proc.stdout.index("{") :])
    rounds = result["rounds"]
    assert [r["order"] for r in rounds] == [["ours", "baseline"], ["baseline", "ours"]]
    for r in rounds:
        assert r["all_ready_s"] > 0 and r["baseline_all_ready_s"] > 0, r
        assert r["vs_baseline"] == pytest.approx(r["all_ready_s"] / r["baseline_all_ready_s"], abs=0.01)
        assert r["operator_cpu_s_until_ready"] > 0 and r["baseline_operator_cpu_s_until_ready"] > 0, r
        for k in (
            "status_lag_s",
            "baseline_status_lag_s",
            "operator_reaction_s",
            "baseline_operator_reaction_s",
        ):
            assert r[k]["p50"] <= r[k]["p99"], (k, r)  # (NaN: none measured)
    assert result["all_ready_s"] == rounds[0]["all_ready_s"]
    assert result["status_lag_s"] == rounds[0]["status_lag_s"]
    assert result["baseline"]["all_ready_s"] == rounds[0]["baseline_all_ready_s"]
    total = sum(r["all_ready_s"] for r in rounds) / sum(r["baseline_all_ready_s"] for r in rounds)
    assert result["all_ready_s_vs_baseline_over_rounds"] == pytest.approx(total, abs=0.01)
    assert "floor_all_available_s" not in result


@pytest.mark.cluster
@pytest.mark.triton
def test_push_bench_on_its_own_cluster(tmp_path: Path) -> None:
    out = tmp_path / "push.json"
    proc = _run(["bench/push_bench.py", "--agents", "1", "--rounds", "1", "--json", str(out)], timeout=900)
    result = json.loads(out.read_text())
    assert result["agents"] == 1 and result["rounds"] == 1
    (took,) = result["spec_change_to_all_serving_s"]
    assert 0 < took < 120 and result["median_s"] == result["max_s"] == took
    (delivered,) = result["spec_change_to_manifest_at_all_agents_s"]
    assert 0 < delivered <= took
    assert "manifest from ['push']" in proc.stdout


def test_verify_bench_prints_its_ratio(tmp_path: Path) -> None:
    out = tmp_path / "verify.json"
    proc = _run(["bench/verify_bench.py", "--size-mb", "4", "--repeat", "1", "--json", str(out)], timeout=300)
    f = json.loads(out.read_text())
    assert f["size_mb"] == 4 and f["sha256_pass_s"] > 0 and f["signature_verify_s"] > 0
    assert f["signature_vs_sha256"] == pytest.approx(f["signature_verify_s"] / f["sha256_pass_s"], rel=0.01)
    assert "-> ratio signature/sha256" in proc.stdout


def test_workqueue_bench_against_a_baseline_ref(tmp_path: Path) -> None:
    out = tmp_path / "wq.json"
    proc = _run(
        ["bench/workqueue_bench.py", "--n", "20", "--repeat", "1", "--max-delay", "0.005",
         "--baseline-ref", "HEAD", "--json", str(out)],
        timeout=300,
    )  # fmt: skip
    f = json.loads(out.read_text())
    assert f["n"] == 20 and f["workers"] >= 1 and f["light_workers"] >= 1
    for name in ("current", "baseline"):
        fig = f[name]
        assert fig["marks"] == 20 + 3 * 20 + 20  # creates, refreshes, one resync pass
        assert 20 <= fig["runs"] <= fig["marks"] and fig["light_runs"] <= fig["runs"]
        assert fig["wall_s"] > 0 and fig["cpu_s"] > 0 and fig["work_cpu_s"] > 0
        assert fig["overhead_cpu_s"] == pytest.approx(fig["cpu_s"] - fig["work_cpu_s"], abs=1e-5)
    ratio = f["vs_baseline"]
    assert ratio["wall_s"] == pytest.approx(f["current"]["wall_s"] / f["baseline"]["wall_s"], rel=0.01)
    assert ratio["cpu_s"] == pytest.approx(f["current"]["cpu_s"] / f["baseline"]["cpu_s"], rel=0.01)
    assert "-> ratio current/baseline (HEAD)" in proc.stdout


@pytest.mark.triton
def test_llm_bench_prints_tokens_per_second_and_latencies(tmp_path: Path) -> None:
    out = tmp_path / "llm.json"
    proc = _run(
        ["bench/llm_bench.py", "--seconds", "1", "--max-tokens", "8", "--concurrency", "1",
         "--concurrency", "4", "--json", str(out)],
        timeout=600,
    )  # fmt: skip
    figures = json.loads(out.read_text())
    assert [lv["concurrency"] for lv in figures["levels"]] == [1, 4]
    for lv in figures["levels"]:
        assert lv["errors"] == 0 and lv["requests"] >= 1
        assert lv["tokens_per_s"] > 0 and lv["tokens"] >= lv["requests"]
        assert lv["ttft_p99_ms"] >= lv["ttft_p50_ms"] > 0
        assert lv["itl_p99_ms"] >= lv["itl_p50_ms"] > 0
    assert "tokens/s" in proc.stdout and "TTFT p50" in proc.stdout


def test_fetch_bench_parallel_single_and_resume(tmp_path: Path) -> None:
    out = tmp_path / "fetch.json"
    proc = _run(
        [
            "bench/fetch_bench.py",
            "--size-mb",
            "24",
            "--part-mb",
            "1",
            "--workers",
            "4",
            "--per-connection-mbps",
            "20",
            "--json",
            str(out),
        ],
        timeout=600,
    )
    f = json.loads(out.read_text())
    assert f["size_bytes"] == 24 << 20 and f["workers"] == 4
    for fig in (f, f["capped"]):
        for mode in ("single", "parallel"):
            assert fig[mode]["seconds"] > 0 and fig[mode]["mb_per_s"] > 0
            assert 10 < fig[mode]["peak_rss_mib"] < 2048  # VmHWM of the child, not the parent
        assert fig["parallel_vs_single_speedup"] == pytest.approx(
            fig["single"]["seconds"] / fig["parallel"]["seconds"], rel=0.02
        )
    assert f["capped"]["single"]["mb_per_s"] <= 20 * 1.1  # the cap holds for one connection
    r = f["resume"]
    assert 0 < r["bytes_first_attempt"] < f["size_bytes"]  # the cut failed the first attempt
    assert r["transferred_over_size"] == pytest.approx(r["bytes_total"] / f["size_bytes"], rel=1e-3)
    assert 1.0 <= r["transferred_over_size"] <= 1.1  # resumed, not started over
    assert "resumed after a cut at 50%" in proc.stdout


@pytest.mark.triton
def test_coldstart_bench_cache_hit_vs_download(tmp_path: Path) -> None:
    out = tmp_path / "coldstart.json"
    proc = _run(["bench/coldstart_bench.py", "--size-mb", "4", "--json", str(out)], timeout=600)
    f = json.loads(out.read_text())
    hit, miss, full = f["cache_hit"], f["no_cache"], f["cache_hit_full_verify"]
    assert miss["origin"] == "download" and hit["origin"] == "cache" == full["origin"]
    assert full["bytes_from_store"] == 0
    assert (
        miss["bytes_from_store"] >= f["weights_bytes"]
        and f["prefetch_bytes_from_store"] >= f["weights_bytes"]
    )
    assert hit["bytes_from_store"] == 0  # the second pod transfers nothing from the store
    for fig in (hit, miss, full):
        assert fig["seconds_to_ready"] == pytest.approx(
            fig["seconds_outside_triton_load"] + fig["seconds_triton_load"], abs=0.01
        )
    assert "cache hit" in proc.stdout
