# netbootd - shortcuts for developers (the README's two commands need no make: scripts/run.sh,
# scripts/test.sh). Everything goes through the project's own virtualenv (.venv),
# created by scripts/setup.sh (which also installs the Debian packages).
PY := .venv/bin/python
PYTEST := .venv/bin/pytest

.PHONY: run test unit e2e bench bench-dhcp bench-tftp bench-http bench-dns bench-agent clean

run:            ## install runtime deps; boot a VM against netbootd (embedded defaults) in private namespaces
	bash scripts/run.sh

test:           ## install test deps and run the whole suite (what CI runs)
	bash scripts/test.sh

unit:
	$(PYTEST) -q tests/unit tests/net

bench: bench-dhcp bench-tftp bench-http bench-dns

bench-dhcp:     ## DHCP leases/s: netbootd vs Kea vs dnsmasq (perfdhcp, namespaces)
	bash scripts/setup.sh bench
	$(PY) bench/dhcp/run.py

bench-tftp:     ## TFTP MB/s and 50-transfer wall time vs tftpd-hpa, atftpd, dnsmasq
	bash scripts/setup.sh bench
	$(PY) bench/tftp/run.py

bench-http:     ## 40 MB over HTTP, 1 and 20 clients, vs nginx
	bash scripts/setup.sh bench
	$(PY) bench/http/run.py

bench-dns:      ## dnsperf qps vs dnsmasq on the same 10,000-host zone
	bash scripts/setup.sh bench
	$(PY) bench/dns/run.py

.PHONY: bench-storage
bench-storage:  ## clone time of a 10 GiB golden volume: reflink pool (xfs) vs copy pool (ext4)
	bash scripts/setup.sh test
	$(PY) bench/storage/clone.py

bench-agent:    ## agent API: enrollments/s, 1,000 idle agents polling, DHCP storm with/without them
	bash scripts/setup.sh bench
	$(PY) bench/agent/run.py

.PHONY: bench-storm
bench-storm:    ## boot storm: 200 hosts DHCP+TFTP+HTTP in namespaces, netbootd vs dnsmasq+nginx (HOSTS=, LOSS=)
	bash scripts/setup.sh bench
	$(PY) bench/storm/run.py --hosts $(or $(HOSTS),200) --loss $(or $(LOSS),0)

e2e:            ## only the qemu boots (slow)
	$(PYTEST) -q tests/e2e

clean:
	rm -rf .venv .pytest_cache .hypothesis build *.egg-info
