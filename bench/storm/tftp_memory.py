"""Memory per TFTP transfer (`.venv/bin/python bench/storm/tftp_memory.py`): Python objects (tracemalloc) with 1,000 transfers
under way on fake sockets, and the kernel's per-socket cost with real UDP
sockets (RSS + slab via /proc/meminfo Slab)."""
import gc, os, socket, sys, tracemalloc, pathlib, tempfile
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
from netbootd.codec import tftp as t
from tests.net.test_tftp_protocol import Harness

def slab():
    for ln in open("/proc/meminfo"):
        if ln.startswith("Slab:"):
            return int(ln.split()[1])

N = 1000
tmp = pathlib.Path(tempfile.mkdtemp())
h = Harness(tmp, total=4096, first_total=4096, first_per_client=8, per_client=8)
h.file("small", b"x" * 1_000_000)          # cached in memory: shared
big = h.file("big", b"y" * 8_000_000)       # read by chunks: shared chunk cache, one fd each
for name in ("small", "big"):
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.take_snapshot()
    before = tracemalloc.get_traced_memory()[0]
    for i in range(N):
        a = (f"10.{i // 250}.{i % 250}.1" if name == "small" else f"10.9.{i // 250}.{i % 250}", 2000)
        h.rrq(name, [("blksize", "1468"), ("windowsize", "4"), ("tsize", "0")], addr=a)
        x = h.transfer(a)
        h.to_transfer(x, t.encode_ack(0))     # confirmed, a window in flight
        x.sock.sent.clear()                   # the fake socket's record is not ours
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    chunk = h.server.chunks.used if name == "big" else 0
    print(f"{name}: {(after - before - chunk) / N:.0f} B of Python objects per transfer "
          f"(shared chunk cache {chunk} B not counted)")

# kernel: N connected UDP sockets
gc.collect()
s0 = slab()
socks = []
for i in range(N):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0)); s.connect(("127.0.0.1", 9)); s.setblocking(False)
    socks.append(s)
s1 = slab()
print(f"kernel slab per connected UDP socket: {(s1 - s0) * 1024 / N:.0f} B (noisy: other processes)")
