# netbootd - everything goes through the project's own virtualenv (.venv),
# created by scripts/setup.sh (which also installs the Debian packages).
PY := .venv/bin/python
PYTEST := .venv/bin/pytest

.PHONY: run test unit bench bench-dhcp clean

run:            ## install runtime deps and run netbootd on embedded defaults
	bash scripts/setup.sh run
	.venv/bin/netbootd serve

test:           ## install test deps and run the whole suite (what CI runs)
	bash scripts/setup.sh test
	$(PYTEST) -q

unit:
	$(PYTEST) -q tests/unit tests/net

bench: bench-dhcp

bench-dhcp:     ## DHCP leases/s: netbootd vs Kea vs dnsmasq (perfdhcp, namespaces)
	bash scripts/setup.sh test
	$(PY) bench/dhcp/run.py

clean:
	rm -rf .venv .pytest_cache .hypothesis build *.egg-info
