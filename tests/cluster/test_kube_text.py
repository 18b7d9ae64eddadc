"""netshift.kube.Kube.get_text against the real apiserver (bench/rollout.py reads its
/metrics with it): the text as served, and the apiserver's error for a path it lacks."""

from __future__ import annotations

import pytest

from netshift.kube import ApiError, Kube


def test_get_text_reads_the_apiservers_metrics_and_raises_its_error(kube: Kube) -> None:
    text = kube.get_text("/metrics")
    assert "# TYPE apiserver_request_total counter" in text
    with pytest.raises(ApiError) as err:
        kube.get_text("/no-such-path")
    assert err.value.status == 404
