"""The admission limit's rule and the fair share, without a server."""

from __future__ import annotations

import grpc
import pytest
from longread_server.api.admission import Admission, AdmissionLimit, Ticket
from longread_server.api.errors import to_service_error
from longread_server.config import AdmissionConfig
from longread_server.domain import CallRejected

CFG = AdmissionConfig(
    enabled=True, target_lag_ms=5.0, initial_limit=100, min_limit=8, max_limit=400
)


def test_lag_over_the_target_cuts_by_the_ratio_at_most_by_half() -> None:
    lim = AdmissionLimit(CFG)
    lim.update(0.010)  # twice the target
    assert lim.limit == 50
    lim.update(0.100)  # twenty times: never more than half per window
    assert lim.limit == 25
    for _ in range(10):
        lim.update(1.0)
    assert lim.limit == CFG.min_limit


def test_grows_by_its_square_root_only_when_reached() -> None:
    lim = AdmissionLimit(CFG)
    lim.update(0.001)
    assert lim.limit == 100  # not reached: unchanged
    lim.reached = True
    lim.update(0.001)
    assert lim.limit == 110
    for _ in range(100):
        lim.reached = True
        lim.update(0.0)
    assert lim.limit == CFG.max_limit


def test_observe_updates_once_per_window() -> None:
    lim = AdmissionLimit(CFG)
    lim.observe(0.010, now=0.0)  # the first sample closes an empty window at once
    assert lim.limit == 50
    lim.observe(0.050, now=0.05)
    assert lim.limit == 50
    lim.observe(0.010, now=0.1)  # window mean 30 ms: a cut by half
    assert lim.limit == 25


async def test_fair_share_and_release() -> None:
    adm = Admission(AdmissionConfig(enabled=True, initial_limit=8, min_limit=8, max_limit=8))
    tickets = [adm.admit("flood") for _ in range(8)]
    assert tickets and adm.in_flight == 8
    with pytest.raises(CallRejected) as info:
        adm.admit("flood")
    err = to_service_error(info.value)
    assert err.code == grpc.StatusCode.RESOURCE_EXHAUSTED and err.reason == "OVERLOADED"
    assert err.retry_after_s == AdmissionConfig().retry_after_s
    # Another tenant holds less than its share (8 // 2): admitted beyond the limit.
    for _ in range(4):
        adm.admit("quiet")
    with pytest.raises(CallRejected):
        adm.admit("quiet")
    assert adm.refused == 2


async def test_closed_refuses_with_draining() -> None:
    adm = Admission(AdmissionConfig(enabled=False))
    adm.admit("a")
    adm.release()
    assert adm.in_flight == 0 and await adm.drained(0.0)
    adm.close()
    with pytest.raises(CallRejected) as info:
        adm.admit("a")
    err = to_service_error(info.value)
    assert err.code == grpc.StatusCode.UNAVAILABLE and err.reason == "DRAINING"
    assert err.retry_after_s is not None and err.retry_after_s > 0


def test_a_message_being_sent_is_marked_and_a_cut_ends_the_stream_after_it() -> None:
    """``sending``: the ticket says a message is with grpc while it is; a drain's cut made
    meanwhile ends the Stream once it is sent (DRAINING), and never hides an error the send
    itself raised."""
    admission = Admission(AdmissionConfig(enabled=False))
    ticket = Ticket("acme", None)
    with admission.sending(ticket):
        assert ticket.in_send
    assert not ticket.in_send
    with pytest.raises(CallRejected) as cut, admission.sending(ticket):
        ticket.cut = True
    assert cut.value.reason == "DRAINING" and not ticket.in_send
    with pytest.raises(KeyError), admission.sending(ticket):
        raise KeyError("the send's own error")
    with admission.sending(None):  # an RPC admission does not track
        pass
