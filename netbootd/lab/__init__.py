"""`netbootd lab` (vm.py) and the network namespaces it, the tests and the benches build (netns.py)."""
