# kpctl: the two commands README.md opens with, and the pieces they are made of.
PY ?= python3
VENV := .venv
HARNESS := $(PY) guest/harness.py
ARCH ?= x86_64
KERNEL ?= 6.1
CMD ?= kpctl doctor
# Guests whose kernel tests `make test` runs, as ARCH/KERNEL: all four.
GUESTS ?= x86_64/6.1 x86_64/6.12 arm64/6.1 arm64/6.12

# The quick loop's test files, in every guest of GUESTS.
FILES ?= tests/kernel
# The jobs of make test beside the guests' kernel tests, as harness.py test-all takes
# them (NAME[@the guest images it needs][~seconds on a first run]=COMMAND): lanes run
# them where a core is free, the longest first.
HOST_CHECKS := --job 'host checks~15=$(MAKE) --no-print-directory lint host-test'
HARNESS_TESTS := --job 'harness tests@x86_64/6.1~220=$(VENV)/bin/pytest -q tests/harness'
VAGRANT_TEST := --job 'vagrant@x86_64/6.1,arm64/6.1~480=bash vagrant/smoke.sh x86_64 arm64'
# Minutes a warm and a cold make test may take before its last line says so.
BUDGET := --budget 45 65

.PHONY: setup venv test quick lint docs host-test harness-test kernel-test soak vagrant-boxes vagrant-test demo counting-demo demo-kmod vm-run vm-shell images bench

setup:
	bash guest/host-setup.sh

venv: $(VENV)/.installed
$(VENV)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(VENV)/bin/pip install -q -e '.[test]'
	touch $@

# Everything, in two lanes (one per core): host checks, the kernel tests of every guest,
# the harness's own tests, Vagrant with Ansible; a summary of every job at the end.
test: setup venv
	$(HARNESS) test-all $(GUESTS) $(HOST_CHECKS) $(HARNESS_TESTS) $(VAGRANT_TEST) $(BUDGET)

# The quick loop: host checks and the kernel tests of FILES in GUESTS, in lanes, e.g.
#   make quick FILES=tests/kernel/test_count.py GUESTS='x86_64/6.1 arm64/6.12'
quick: setup venv
	$(HARNESS) test-all $(GUESTS) --paths '$(FILES)' $(HOST_CHECKS)

host-test: venv
	$(VENV)/bin/pytest -q tests/host

# What the code already meets, kept: ruff's rules and mypy --strict (pyproject.toml).
lint: venv
	$(VENV)/bin/ruff check kpctl tests bench guest docs
	$(VENV)/bin/mypy

# docs/cli.md from the commands' --help (a host test fails when it is stale).
docs: venv
	$(VENV)/bin/python -m kpctl.cli.reference > docs/cli.md

harness-test: setup venv
	$(VENV)/bin/pytest -q tests/harness

kernel-test: setup
	$(HARNESS) test-all $(GUESTS)

# tests/kernel/test_soak.py for SOAK_SECONDS (make test runs it for 10 s) in one guest.
SOAK_SECONDS ?= 600
soak: setup
	$(HARNESS) run --arch $(ARCH) --kernel $(KERNEL) --timeout $$(( $(SOAK_SECONDS) + 1200 )) -- \
		'KPCTL_SOAK_SECONDS=$(SOAK_SECONDS) python3 -m pytest -q -s -p no:cacheprovider tests/kernel/test_soak.py'

images: setup
	@for g in $(GUESTS); do $(HARNESS) image --arch $${g%/*} --kernel $${g#*/} || exit 1; done

demo: setup
	$(HARNESS) run --arch $(ARCH) --kernel $(KERNEL) -- sh examples/demo.sh

counting-demo: setup
	$(HARNESS) run --arch $(ARCH) --kernel $(KERNEL) -- sh examples/counting.sh

demo-kmod: setup
	$(HARNESS) run --arch $(ARCH) --kernel $(KERNEL) -- sh examples/demo-kmod.sh

vm-run: setup
	$(HARNESS) run --arch $(ARCH) --kernel $(KERNEL) -- '$(CMD)'

vm-shell: setup
	$(HARNESS) shell --arch $(ARCH) --kernel $(KERNEL)

# Vagrant boxes for both arches, built from the same images as the guests.
vagrant-boxes: setup
	bash vagrant/build-box.sh x86_64 6.1
	bash vagrant/build-box.sh arm64 6.1

vagrant-test: setup venv
	bash vagrant/smoke.sh x86_64 arm64

# Benchmarks print numbers (no pass/fail): watch's parser and start-up here; in a guest,
# adding 500 probes, counting's engines beside streaming, and kpctl bench's matrix.
bench: venv
	$(VENV)/bin/python bench/watch_parse.py
	$(VENV)/bin/python bench/startup.py
	$(HARNESS) run --arch $(ARCH) --kernel $(KERNEL) -- python3 bench/add_many.py
	$(HARNESS) run --arch $(ARCH) --kernel $(KERNEL) -- python3 bench/counting.py
	$(HARNESS) run --arch $(ARCH) --kernel $(KERNEL) -- \
		'python3 -m kpctl kmod build >/dev/null && python3 -m kpctl kmod load && python3 -m kpctl bench'
