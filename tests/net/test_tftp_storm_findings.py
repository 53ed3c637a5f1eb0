"""What the storm bench found in the TFTP server (issue 15, bench/storm/README.md),
on fake sockets and a fake clock: the lost last ACK, EDK2's size probe, and
the discover kernel and initrd served by name from their files.  (The cap and
eviction findings: test_tftp_protocol.py and test_tftp_unconfirmed.py.)"""
from __future__ import annotations

from netbootd import events
from netbootd.codec import tftp as t
from netbootd.config import HooksConfig
from netbootd.net.services.tftp import DISCOVER_NAMES, Generated
from tests.net.test_tftp_protocol import CLIENT, Harness, decoded, download

EDK2_RRQ = [("blksize", "1468"), ("windowsize", "4")]


def refused_port(xfer):
    """The client's port is closed now: the next read is ICMP's ECONNREFUSED."""
    def recv_into(buf):
        raise ConnectionRefusedError(111, "Connection refused")
    xfer.sock.recv_into = recv_into


def run_to_final_window(h, xfer):
    """ACK 0 and every full window: the final window goes out, unACKed.
    Returns the DATA blocks the client got."""
    got = []
    h.to_transfer(xfer, t.encode_ack(0))
    while True:
        new = [p for p, _ in decoded(xfer.sock) if isinstance(p, t.Data)][len(got):]
        got += new
        if len(new[-1].data) < 1468:
            return got
        h.to_transfer(xfer, t.encode_ack(new[-1].block))


def test_the_last_ack_lost_then_the_port_closed_is_finished_not_failed(tmp_path):
    """7 of 200 hosts at 2% loss had tftp.failed (and its hook) though they
    booted: their final ACK was lost, then their port closed (ICMP)."""
    h = Harness(tmp_path)
    data = bytes(range(256)) * 40                     # 10240 bytes: 7 blocks of 1468
    h.file("ipxe.efi", data)
    h.rrq("ipxe.efi", EDK2_RRQ)
    xfer = h.transfer()
    got = run_to_final_window(h, xfer)
    assert b"".join(p.data for p in got) == data      # the client has every byte
    h.advance(1.0)                                    # our resend of the final window
    refused_port(xfer)
    xfer.readable(h.reactor.seconds())
    assert xfer.closed
    (ev,) = h.events
    assert ev["outcome"] == "finished" and ev["final_ack"] is False
    assert ev["bytes"] == len(data) and ev["error"] is None
    assert ev["note"] == "final ACK not received (client port unreachable)"
    assert h.server.counters["transfer.finished_unacked"] == 1
    assert not events.CATALOG["tftp." + ev["outcome"]].failure


def test_the_last_ack_lost_and_the_client_silent_is_finished_after_the_retries(tmp_path):
    h = Harness(tmp_path, retries=2)
    h.file("f", b"x" * 600)
    h.rrq("f")
    xfer = h.transfer()
    h.to_transfer(xfer, t.encode_ack(1))              # DATA 2 (the final) goes out
    for _ in range(3):
        h.advance(1.0)
    assert xfer.closed and h.events[-1]["outcome"] == "finished"
    assert h.events[-1]["final_ack"] is False and h.events[-1]["retransmits"] == 2


def test_a_port_closing_mid_transfer_is_still_a_failure(tmp_path):
    h = Harness(tmp_path)
    h.file("f", b"x" * 5000)
    h.rrq("f")
    xfer = h.transfer()
    h.to_transfer(xfer, t.encode_ack(1))
    refused_port(xfer)
    xfer.readable(h.reactor.seconds())
    ev = h.events[-1]
    assert ev["outcome"] == "failed" and ev["error"] == "client port unreachable"
    assert "final_ack" not in ev


def test_a_complete_transfer_has_no_final_ack_flag(tmp_path):
    h = Harness(tmp_path)
    h.file("f", b"x" * 600)
    h.rrq("f")
    assert download(h, h.transfer()) == b"x" * 600
    assert h.events[-1]["outcome"] == "finished" and "final_ack" not in h.events[-1]


def test_edk2s_size_probe_is_aborted_which_is_no_failure_and_no_hook(tmp_path):
    """EDK2 asks tsize, reads the OACK, answers ERROR 8: on every UEFI boot
    (160 of 200 timelines showed a failure)."""
    h = Harness(tmp_path)
    h.file("ipxe.efi", b"e" * 3000)
    h.rrq("ipxe.efi", [("tsize", "0"), ("blksize", "1468")])
    xfer = h.transfer()
    h.to_transfer(xfer, t.encode_error(t.ERR_OPTION_REFUSED, "probe"))
    kind = "tftp." + h.events[-1]["outcome"]
    assert kind == "tftp.aborted"
    assert kind not in events.FAILURE_KINDS and kind not in HooksConfig().kinds
    assert "tftp.failed" in events.FAILURE_KINDS                 # the flag still means it


# -- the discover kernel and initrd by name --------------------------------------
def test_a_generated_name_may_be_a_file_served_from_its_path(tmp_path):
    """netbootd/vmlinuz and netbootd/discover.img: the files HTTP serves under
    /files/netbootd/, over TFTP too (the UEFI net medium's GRUB loads them)."""
    elsewhere = tmp_path / "state"
    elsewhere.mkdir()
    kernel = elsewhere / "vmlinuz-6.1"
    kernel.write_bytes(b"K" * 20000)                  # over the memory cache's limit
    initrd = elsewhere / "discover.img"
    initrd.write_bytes(b"I" * 3000)
    paths = {}
    h = Harness(tmp_path, generated=Generated({"ipxe.efi": b"bin"}, paths), cache_limit=10000)
    h.rrq("netbootd/vmlinuz")
    assert decoded(h.lsock)[0][0].code == t.ERR_NOT_FOUND      # not built yet
    paths.update({"netbootd/vmlinuz": str(kernel), "netbootd/discover.img": str(initrd),
                  "undionly.kpxe": "/etc/passwd"})            # only the discover names
    h.rrq("/netbootd/discover.img", addr=(CLIENT[0], 3001))
    assert download(h, h.transfer((CLIENT[0], 3001))) == b"I" * 3000
    h.rrq("netbootd/vmlinuz", [("blksize", "1468")], addr=(CLIENT[0], 3002))
    assert download(h, h.transfer((CLIENT[0], 3002))) == b"K" * 20000
    h.rrq("undionly.kpxe", addr=(CLIENT[0], 3003))
    assert decoded(h.lsock)[-1][0].code == t.ERR_NOT_FOUND
    assert h.server.counters["file.direct"] == 1


def test_the_generated_mapping_follows_the_discover_build():
    paths = {}
    g = Generated({"ipxe.efi": b"x"}, paths)
    assert list(g) == ["ipxe.efi"] and "netbootd/vmlinuz" not in g
    paths["netbootd/vmlinuz"] = "/boot/vmlinuz"
    paths["ipxe.efi"] = "/elsewhere"                   # the bytes win
    assert g["netbootd/vmlinuz"] == "/boot/vmlinuz" and g["ipxe.efi"] == b"x"
    assert sorted(g) == ["ipxe.efi", "netbootd/vmlinuz"] and len(g) == 2
    assert set(DISCOVER_NAMES) == {"netbootd/vmlinuz", "netbootd/discover.img"}
