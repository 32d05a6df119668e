// SPDX-License-Identifier: GPL-2.0
/*
 * kpctl_kmod's probe registry: kprobes and kretprobes made and removed at run time,
 * their handlers, and the counters that show each handler's work.
 *
 * The handlers run in atomic context (int3/brk exception or ftrace callback, with
 * preemption off): they only bump per-probe atomics and emit a trace event. Every
 * registration change happens in process context under kpctl_lock.
 */
#include <linux/ctype.h>
#include <linux/cpumask.h>
#include <linux/ftrace.h>
#include <linux/kernel.h>
#include <linux/ktime.h>
#include <linux/module.h>
#include <linux/moduleparam.h>
#include <linux/ptrace.h>
#include <linux/security.h>
#include <linux/slab.h>
#include <linux/string.h>

#include "kpctl_internal.h"

#define CREATE_TRACE_POINTS
#include "kpctl_trace.h"

DEFINE_MUTEX(kpctl_lock);
LIST_HEAD(kpctl_probes);
static unsigned int kpctl_nr_probes;
static u32 kpctl_next_id = 1;
unsigned int kpctl_generation = 1;

/* Never 0: nl_dump_check_consistent() takes a 0 for "no dump part sent yet". */
static void kpctl_generation_inc(void)
{
	while (++kpctl_generation == 0)
		;
}

static unsigned int max_probes = 128;

static int max_probes_set(const char *val, const struct kernel_param *kp)
{
	return param_set_uint_minmax(val, kp, 1, KPCTL_MAX_PROBES_LIMIT);
}

static const struct kernel_param_ops max_probes_ops = {
	.set = max_probes_set,
	.get = param_get_uint,
};
module_param_cb(max_probes, &max_probes_ops, &max_probes, 0444);
MODULE_PARM_DESC(max_probes, "most probes held at once (1-4096, default 128)");

/*
 * register_kretprobe() preallocates maxactive instances per return probe, so
 * max_probes x KPCTL_MAXACTIVE_MAX could pin gigabytes: the sum has a budget of its own.
 */
static unsigned int max_instances = 16384;
static unsigned int kpctl_nr_instances;

static int max_instances_set(const char *val, const struct kernel_param *kp)
{
	return param_set_uint_minmax(val, kp, 1, KPCTL_MAX_INSTANCES_LIMIT);
}

static const struct kernel_param_ops max_instances_ops = {
	.set = max_instances_set,
	.get = param_get_uint,
};
module_param_cb(max_instances, &max_instances_ops, &max_instances, 0444);
MODULE_PARM_DESC(max_instances, "most return probe instances preallocated at once, all probes together (default 16384)");

/* What register_kretprobe() will preallocate: maxactive, or its default. */
static unsigned int kpctl_instances(const struct kpctl_probe_spec *spec)
{
	return spec->maxactive ?: max_t(unsigned int, 10, 2 * num_possible_cpus());
}

static int kpctl_pre_handler(struct kprobe *kp, struct pt_regs *regs)
{
	struct kpctl_probe *p = container_of(kp, struct kpctl_probe, kp);

	atomic64_inc(&p->hits);
	trace_kprobe_hit(p->id, p->name, (unsigned long)kp->addr);
	return 0;
}

/* Runs after the copied instruction was single-stepped (or emulated). */
static void kpctl_post_handler(struct kprobe *kp, struct pt_regs *regs,
			       unsigned long flags)
{
	struct kpctl_probe *p = container_of(kp, struct kpctl_probe, kp);

	atomic64_inc(&p->post_hits);
}

/*
 * The entry timestamp lives in the kretprobe instance (rp.data_size), one per pending
 * call: no allocation and no shared state in the handlers. The NMI-safe clock because
 * a probed function may run in NMI context or inside the timekeeping write section.
 */
static int kpctl_entry_handler(struct kretprobe_instance *ri, struct pt_regs *regs)
{
	struct kpctl_probe *p = container_of(get_kretprobe(ri), struct kpctl_probe, rp);

	*(u64 *)ri->data = ktime_get_mono_fast_ns();
	atomic64_inc(&p->hits);
	return 0;
}

static int kpctl_ret_handler(struct kretprobe_instance *ri, struct pt_regs *regs)
{
	struct kpctl_probe *p = container_of(get_kretprobe(ri), struct kpctl_probe, rp);
	u64 latency = ktime_get_mono_fast_ns() - *(u64 *)ri->data;

	atomic64_inc(&p->ret_hits);
	trace_kretprobe_hit(p->id, p->name, (unsigned long)p->rp.kp.addr,
			    get_kretprobe_retaddr(ri), regs_return_value(regs),
			    latency);
	return 0;
}

NOKPROBE_SYMBOL(kpctl_pre_handler);
NOKPROBE_SYMBOL(kpctl_post_handler);
NOKPROBE_SYMBOL(kpctl_entry_handler);
NOKPROBE_SYMBOL(kpctl_ret_handler);

struct kpctl_probe *kpctl_probe_find(u32 id)
{
	struct kpctl_probe *p;

	lockdep_assert_held(&kpctl_lock);
	list_for_each_entry(p, &kpctl_probes, node)
		if (p->id == id)
			return p;
	return NULL;
}

/*
 * Trace event and tracefs naming rules, so a name is usable everywhere kpctl shows it.
 * ASCII only: the kernel's isalnum() also accepts Latin-1 letters (0xc0-0xff).
 */
static bool kpctl_name_valid(const char *name)
{
	const char *c;

	if (!*name || isdigit(*name))
		return false;
	for (c = name; *c; c++)
		if (!isascii(*c) || (!isalnum(*c) && *c != '_'))
			return false;
	return true;
}

static int kpctl_check_spec(const struct kpctl_probe_spec *spec,
			    struct netlink_ext_ack *extack)
{
	struct kpctl_probe *p;
	int err;

	if (!kpctl_name_valid(spec->name)) {
		NL_SET_ERR_MSG(extack, "probe name must be [A-Za-z_][A-Za-z0-9_]*");
		return -EINVAL;
	}
	if (!*spec->symbol) {
		NL_SET_ERR_MSG(extack, "empty symbol");
		return -EINVAL;
	}
	if (spec->maxactive && spec->kind != KPCTL_KIND_RETURN) {
		NL_SET_ERR_MSG(extack, "maxactive applies to return probes only");
		return -EINVAL;
	}
	list_for_each_entry(p, &kpctl_probes, node) {
		if (!strcmp(p->name, spec->name)) {
			NL_SET_ERR_MSG(extack, "a probe with this name exists");
			return -EEXIST;
		}
	}
	if (kpctl_nr_probes >= max_probes) {
		NL_SET_ERR_MSG(extack, "too many probes (see the max_probes module parameter)");
		return -ENOSPC;
	}
	if (spec->kind == KPCTL_KIND_RETURN &&
	    kpctl_nr_instances + kpctl_instances(spec) > max_instances) {
		NL_SET_ERR_MSG(extack, "return probe instances would pass the max_instances budget");
		return -ENOSPC;
	}
	/* As kprobe_events and perf's kprobes (LOCKDOWN_KPROBES, confidentiality). */
	err = security_locked_down(LOCKDOWN_KPROBES);
	if (err) {
		NL_SET_ERR_MSG(extack, "the kernel is locked down: kprobes are refused");
		return err;
	}
	return 0;
}

/* register_kprobe()'s and enable_kprobe()'s errors, as a user can act on them. */
static void kpctl_kernel_error(int err, const struct kpctl_probe_spec *spec,
			       struct netlink_ext_ack *extack)
{
	switch (err) {
	case -ENOENT:
		NL_SET_ERR_MSG(extack, "symbol not in kallsyms (unknown, inlined or renamed)");
		break;
	case -EINVAL:
		/* kprobe_on_func_entry() refuses return probes past the entry. */
		if (spec->kind == KPCTL_KIND_RETURN && spec->offset)
			NL_SET_ERR_MSG(extack, "a return probe must be at the function's entry");
		else
			NL_SET_ERR_MSG(extack, "address not probeable: on the kprobe blacklist, not kernel text, reserved or misaligned");
		break;
	case -EILSEQ:
		NL_SET_ERR_MSG(extack, "offset is not on an instruction boundary");
		break;
	case -EBUSY:
		NL_SET_ERR_MSG(extack, "address is busy: another ftrace user owns it");
		break;
	case -ENOMEM:
		NL_SET_ERR_MSG(extack, "out of memory");
		break;
	default:
		NL_SET_ERR_MSG(extack, "the kernel refused to register or arm the probe");
	}
}

/* Where the kernel puts a probe on a symbol+offset, and how it would carry it. */
struct kpctl_site {
	unsigned long addr;
	unsigned long func;	/* start of the symbol that holds addr, 0 if none */
	unsigned long parent;	/* for a clone (foo.cold, foo.part.0): foo's start, else 0 */
	bool on_ftrace;
	char module[MODULE_NAME_LEN];	/* the module that holds addr, "" for vmlinux */
};

/* Where a symbol begins, as kprobes resolves it: a scout that is never armed. */
static int kpctl_resolve(const char *symbol, u32 offset, struct kprobe *scout)
{
	int err;

	*scout = (struct kprobe) {
		.symbol_name = symbol,
		.offset = offset,
		.flags = KPROBE_FLAG_DISABLED,
	};
	err = register_kprobe(scout);
	if (!err)
		unregister_kprobe(scout);
	return err;
}

/*
 * The symbol that holds site->addr (from "name+0xoff/0xsize [module]", or the bare
 * address): its start, its module, and for a suffixed clone its parent's start, which
 * kprobe_events' notrace check falls back on (within_notrace_func()).
 */
static int kpctl_describe(struct kpctl_site *site)
{
	unsigned long offset;
	struct kprobe scout;
	char *where, *plus, *module, *dot;

	where = kmalloc(KSYM_SYMBOL_LEN, GFP_KERNEL);
	if (!where)
		return -ENOMEM;
	sprint_symbol(where, site->addr);
	module = strchr(where, '[');
	if (module) {
		strscpy(site->module, module + 1, sizeof(site->module));
		site->module[strcspn(site->module, "] ")] = '\0';
		*module = '\0';
	}
	plus = strrchr(where, '+');
	site->func = plus && sscanf(plus, "+0x%lx/", &offset) == 1 ? site->addr - offset : 0;
	if (plus) {
		*plus = '\0';
		dot = strchr(where, '.');
		if (dot && dot != where) {
			*dot = '\0';
			if (!kpctl_resolve(where, 0, &scout))
				site->parent = (unsigned long)scout.addr;
		}
	}
	kfree(where);
	return 0;
}

/*
 * Asked of the kernel itself: the address kprobes resolves (kallsyms, plus ENDBR
 * skipping on x86), and whether it is an ftrace site (KPROBE_FLAG_FTRACE, from
 * check_ftrace_location(); ftrace_location() is not exported).
 */
static int kpctl_locate(const struct kpctl_probe_spec *spec, struct kpctl_site *site,
			struct netlink_ext_ack *extack)
{
	struct kprobe scout;
	int err;

	*site = (struct kpctl_site) {};
	err = kpctl_resolve(spec->symbol, spec->offset, &scout);
	if (err) {
		kpctl_kernel_error(err, spec, extack);
		return err;
	}
	site->addr = (unsigned long)scout.addr;
	site->on_ftrace = kprobe_ftrace(&scout);
	return kpctl_describe(site);
}

/*
 * kprobes adds the offset to the symbol's address without looking at its size: an
 * offset past the end plants the probe in the next function. (At offset 0 kprobes may
 * step over an ENDBR64, and the address is in the symbol anyway.)
 */
static int kpctl_check_in_symbol(const struct kpctl_probe_spec *spec,
				 const struct kpctl_site *site,
				 struct netlink_ext_ack *extack)
{
	if (spec->offset && site->addr - site->func != spec->offset) {
		NL_SET_ERR_MSG(extack, "offset is past the end of the symbol");
		return -ERANGE;
	}
	return 0;
}

#ifdef CONFIG_DYNAMIC_FTRACE
/* ftrace_set_filter_ip() on a function's start finds its ftrace site if it has one
 * (ftrace_location(), v5.19+). The ftrace_ops is never registered, and a fresh one
 * each time: ftrace_free_filter() leaves its hashes dangling, for ops going away. */
static int kpctl_has_ftrace_site(unsigned long func)
{
	struct ftrace_ops *ops;
	int err;

	ops = kzalloc(sizeof(*ops), GFP_KERNEL);
	if (!ops)
		return -ENOMEM;
	err = ftrace_set_filter_ip(ops, func, 0, 1);
	ftrace_free_filter(ops);
	kfree(ops);
	/* No ftrace site in the function (-EINVAL or -ENOENT, by kernel version). */
	if (err == -EINVAL || err == -ENOENT)
		return 0;
	/* ftrace itself is off (-ENODEV): nothing to ask, as for kprobe_events. */
	return 1;
}

/*
 * The handlers emit trace events, so like kprobe_events (within_notrace_func(),
 * unless CONFIG_KPROBE_EVENTS_ON_NOTRACE) the module refuses functions that ftrace
 * may not trace: tracing's own code and what it calls. A clone without a site of its
 * own (foo.cold, foo.part.0) is judged by its parent, as kprobe_events judges it.
 */
static int kpctl_check_traceable(const struct kpctl_site *site,
				 struct netlink_ext_ack *extack)
{
	int traceable;

	if (!site->func)
		return 0;
	traceable = kpctl_has_ftrace_site(site->func);
	if (!traceable && site->parent)
		traceable = kpctl_has_ftrace_site(site->parent);
	if (traceable < 0)
		return traceable;
	if (!traceable) {
		NL_SET_ERR_MSG(extack, "the function is notrace (the tracing code itself or what it calls)");
		return -EINVAL;
	}
	return 0;
}
#else
static int kpctl_check_traceable(const struct kpctl_site *site,
				 struct netlink_ext_ack *extack)
{
	return 0;
}
#endif

/*
 * One probe of a kind per address, however it was spelled (sym, sym+4 after ENDBR).
 * A gone probe's address is 0: its old place may hold new code.
 */
static int kpctl_check_site(const struct kpctl_probe_spec *spec,
			    const struct kpctl_site *site,
			    struct netlink_ext_ack *extack)
{
	struct kpctl_probe *p;

	list_for_each_entry(p, &kpctl_probes, node) {
		if (p->kind == spec->kind && p->addr == site->addr) {
			NL_SET_ERR_MSG(extack, "this address already has a probe of this kind");
			return -EEXIST;
		}
	}
	return 0;
}

/*
 * Entry probes get a post_handler (it counts the single-stepped or emulated
 * instruction, and keeps the probe a breakpoint: a probe with one is never optimized
 * into a jump) only where the kernel plants a breakpoint, never on an ftrace site.
 *
 * On ftrace sites the kernel arms a probe through kprobe_ipmodify_ops when its
 * (aggregate) probe has a post_handler and through kprobe_ftrace_ops otherwise, and
 * chooses again when it disarms. add_new_kprobe() sets the aggregate's post_handler
 * when a probe with one joins an aggregate that is already armed, without re-arming
 * it: the last unregister then disarms through the ops it was not armed with, fails
 * ("Failed to disarm kprobe-ftrace ... (error -2)"), leaves the probe in the kernel's
 * table, and the caller frees it under the kernel's feet. Any kprobe without a
 * post_handler armed there first (tracefs, perf, BPF, our own return probes) sets
 * this up. Present since 0bc11ed5ab60 ("kprobes: Allow kprobes coexist with
 * livepatch", v5.4); 5dd7caf0bdc5 (v6.1) fixed the other direction only (a
 * post_handler probe leaving); seen on Debian's 6.1.0-57 and 6.12.
 */
static void kpctl_entry_handlers(struct kpctl_probe *p, const struct kpctl_site *site)
{
	p->kp.pre_handler = kpctl_pre_handler;
	if (!site->on_ftrace)
		p->kp.post_handler = kpctl_post_handler;
}

/* Fill the probe's kprobe or kretprobe afresh and register it at site. */
static int kpctl_register(struct kpctl_probe *p, const struct kpctl_site *site,
			  u32 maxactive, bool enabled)
{
	struct kprobe *kp;

	/* Zeroed as a new one: after an unregister the kernel may have left state in it. */
	memset(&p->rp, 0, sizeof(p->rp));
	kp = kpctl_kprobe(p);
	kp->symbol_name = p->symbol;
	kp->offset = p->offset;
	/* The one flag a caller may set before registering (include/linux/kprobes.h). */
	if (!enabled)
		kp->flags = KPROBE_FLAG_DISABLED;
	if (p->kind == KPCTL_KIND_RETURN) {
		p->rp.entry_handler = kpctl_entry_handler;
		p->rp.handler = kpctl_ret_handler;
		p->rp.data_size = sizeof(u64);
		p->rp.maxactive = maxactive;
		return register_kretprobe(&p->rp);
	}
	kpctl_entry_handlers(p, site);
	return register_kprobe(kp);
}

/* Where spec's symbol is now, if a probe may be there. */
static int kpctl_site_of(const struct kpctl_probe_spec *spec, struct kpctl_site *site,
			 struct netlink_ext_ack *extack)
{
	int err;

	err = kpctl_locate(spec, site, extack);
	if (!err)
		err = kpctl_check_in_symbol(spec, site, extack);
	if (!err)
		err = kpctl_check_traceable(site, extack);
	return err;
}

struct kpctl_probe *kpctl_probe_add(const struct kpctl_probe_spec *spec,
				    struct netlink_ext_ack *extack)
{
	struct kpctl_site site;
	struct kpctl_probe *p;
	int err;

	lockdep_assert_held(&kpctl_lock);
	err = kpctl_check_spec(spec, extack);
	if (!err)
		err = kpctl_site_of(spec, &site, extack);
	if (!err)
		err = kpctl_check_site(spec, &site, extack);
	if (err)
		return ERR_PTR(err);

	p = kzalloc(sizeof(*p), GFP_KERNEL);
	if (!p)
		return ERR_PTR(-ENOMEM);
	/* Set before registering: the handlers may run as soon as the probe is armed. */
	p->id = kpctl_next_id;
	p->kind = spec->kind;
	p->offset = spec->offset;
	p->addr = site.addr;
	strscpy(p->name, spec->name, sizeof(p->name));
	strscpy(p->symbol, spec->symbol, sizeof(p->symbol));
	strscpy(p->module, site.module, sizeof(p->module));
	atomic64_set(&p->hits, 0);
	atomic64_set(&p->post_hits, 0);
	atomic64_set(&p->ret_hits, 0);

	err = kpctl_register(p, &site, spec->maxactive, spec->enabled);
	if (err) {
		kpctl_kernel_error(err, spec, extack);
		kfree(p);
		return ERR_PTR(err);
	}

	kpctl_next_id++;
	list_add_tail(&p->node, &kpctl_probes);
	kpctl_nr_probes++;
	if (p->kind == KPCTL_KIND_RETURN)
		kpctl_nr_instances += p->rp.maxactive;
	kpctl_generation_inc();
	return p;
}

/*
 * Waits for running handlers (unregister_k*probe() synchronizes RCU). Whether the
 * kernel let go: unregister_kprobes() and unregister_kretprobes() set the address of a
 * probe that __unregister_kprobe_top() could not take out of the kernel's table (its
 * disarm failed: an ftrace ops mismatch, a dead ftrace) to NULL, and return nothing:
 * the kernel may still call its handlers, so such a probe is never freed; it stays
 * listed as stuck, and pins the module, whose code the handlers are.
 */
static bool kpctl_unregister(struct kpctl_probe *p)
{
	if (p->kind == KPCTL_KIND_RETURN)
		unregister_kretprobe(&p->rp);
	else
		unregister_kprobe(&p->kp);
	if (kpctl_kprobe(p)->addr)
		return true;
	p->stuck = true;
	__module_get(THIS_MODULE);
	pr_warn("kpctl_kmod: the kernel kept probe %s after unregistering it: "
		"it stays, and the module with it\n", p->name);
	kpctl_generation_inc();
	return false;
}

int kpctl_probe_remove(struct kpctl_probe *p, struct netlink_ext_ack *extack)
{
	lockdep_assert_held(&kpctl_lock);
	if (p->stuck) {
		NL_SET_ERR_MSG(extack, "the kernel still holds this probe (see dmesg): it stays");
		return -EBUSY;
	}
	if (!p->gone && !kpctl_unregister(p)) {
		NL_SET_ERR_MSG(extack, "the kernel kept the probe after unregistering it (see dmesg): it stays");
		return -EBUSY;
	}
	list_del(&p->node);
	kpctl_nr_probes--;
	if (p->kind == KPCTL_KIND_RETURN)
		kpctl_nr_instances -= p->rp.maxactive;
	kpctl_generation_inc();
	kfree(p);
	return 0;
}

int kpctl_probe_set_enabled(struct kpctl_probe *p, bool enabled,
			    struct netlink_ext_ack *extack)
{
	struct kpctl_probe_spec spec = { .kind = p->kind, .offset = p->offset };
	int err;

	lockdep_assert_held(&kpctl_lock);
	if (p->stuck) {
		NL_SET_ERR_MSG(extack, "the kernel still holds this probe (see dmesg): it stays");
		return -EBUSY;
	}
	if (p->gone) {
		/* Kept for when its module comes back. */
		p->gone_disabled = !enabled;
		return 0;
	}
	err = enabled ? enable_kprobe(kpctl_kprobe(p)) :
			disable_kprobe(kpctl_kprobe(p));
	if (err == -EINVAL)
		/* __get_valid_kprobe() found it no more: its module's text went away. */
		NL_SET_ERR_MSG(extack, "the probed code is gone");
	else if (err)
		kpctl_kernel_error(err, &spec, extack);
	return err;
}

/*
 * The module holding a probe's code goes: kprobes marks the probe gone
 * (kprobes_module_callback(), KPROBE_FLAG_GONE, which kprobe_disabled() counts as
 * disabled, so unregistering it disarms nothing); take it out of the kernel's tables
 * now, so no stale address is left to collide with the next probe there.
 */
static void kpctl_probe_leave(struct kpctl_probe *p)
{
	p->gone_disabled = READ_ONCE(kpctl_kprobe(p)->flags) & KPROBE_FLAG_DISABLED;
	if (kpctl_unregister(p)) {
		p->gone = true;
		p->addr = 0;
		kpctl_generation_inc();
	}
}

/*
 * The module comes back (MODULE_STATE_COMING: its ftrace sites are set up and its
 * kprobe blacklist is known, kprobes' own notifier ran first): register the probe at
 * the symbol's new place, as kprobe_events re-registers its own
 * (trace_kprobe_module_callback()). Where that fails it stays gone, and says why.
 */
static void kpctl_probe_rearm(struct kpctl_probe *p)
{
	struct kpctl_probe_spec spec = {
		.symbol = p->symbol, .offset = p->offset, .kind = p->kind,
	};
	struct kpctl_site site;
	int err;

	err = kpctl_site_of(&spec, &site, NULL);
	if (!err)
		err = kpctl_register(p, &site, p->kind == KPCTL_KIND_RETURN ? p->rp.maxactive : 0,
				     !p->gone_disabled);
	if (err) {
		pr_info("kpctl_kmod: probe %s stays gone: %s came back without a probeable %s (error %d)\n",
			p->name, p->module, p->symbol, err);
		return;
	}
	p->gone = false;
	p->addr = site.addr;
	kpctl_generation_inc();
}

static int kpctl_module_event(struct notifier_block *nb, unsigned long state, void *data)
{
	struct module *mod = data;
	struct kpctl_probe *p;

	if (state != MODULE_STATE_GOING && state != MODULE_STATE_COMING)
		return NOTIFY_DONE;
	mutex_lock(&kpctl_lock);
	list_for_each_entry(p, &kpctl_probes, node) {
		if (p->stuck || strcmp(p->module, mod->name))
			continue;
		if (state == MODULE_STATE_GOING && !p->gone)
			kpctl_probe_leave(p);
		else if (state == MODULE_STATE_COMING && p->gone)
			kpctl_probe_rearm(p);
	}
	mutex_unlock(&kpctl_lock);
	return NOTIFY_DONE;
}

/* Priority 0, registered after kprobes' own (same priority): runs after it. */
static struct notifier_block kpctl_module_nb = {
	.notifier_call = kpctl_module_event,
};

int kpctl_probes_watch_modules(void)
{
	return register_module_notifier(&kpctl_module_nb);
}

void kpctl_probes_unwatch_modules(void)
{
	unregister_module_notifier(&kpctl_module_nb);
}

void kpctl_probes_remove_all(void)
{
	struct kpctl_probe *p, *tmp;

	mutex_lock(&kpctl_lock);
	/*
	 * A stuck probe pins the module, so none is left by the time it unloads, unless
	 * one sticks right here: then nothing can keep its handlers' code, and it is only
	 * not freed.
	 */
	list_for_each_entry_safe(p, tmp, &kpctl_probes, node)
		kpctl_probe_remove(p, NULL);
	mutex_unlock(&kpctl_lock);
}
