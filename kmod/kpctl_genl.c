// SPDX-License-Identifier: GPL-2.0
/*
 * kpctl_kmod: kprobes and kretprobes managed at run time over a generic netlink
 * family of their own ("kpctl"), with every hit reported as a trace event.
 */
#include <linux/capability.h>
#include <linux/ktime.h>
#include <linux/module.h>
#include <linux/sched/signal.h>
#include <net/genetlink.h>

#include "kpctl_internal.h"

/*
 * Beyond what NLA_POLICY_RANGE's s16 bounds hold: a range of its own. Not const:
 * struct nla_policy points to it without const before v6.2.
 */
static struct netlink_range_validation kpctl_bench_range __ro_after_init = {
	.min = 1,
	.max = KPCTL_BENCH_MAX,
};

static const struct nla_policy kpctl_policy[KPCTL_A_MAX + 1] = {
	[KPCTL_A_ID]		= NLA_POLICY_MIN(NLA_U32, 1),
	[KPCTL_A_NAME]		= { .type = NLA_NUL_STRING, .len = KPCTL_NAME_MAX },
	[KPCTL_A_SYMBOL]	= { .type = NLA_NUL_STRING, .len = KSYM_NAME_LEN - 1 },
	[KPCTL_A_OFFSET]	= { .type = NLA_U32 },
	[KPCTL_A_KIND]		= NLA_POLICY_MAX(NLA_U8, KPCTL_KIND_RETURN),
	[KPCTL_A_MAXACTIVE]	= NLA_POLICY_RANGE(NLA_U32, 1, KPCTL_MAXACTIVE_MAX),
	[KPCTL_A_ENABLED]	= NLA_POLICY_MAX(NLA_U8, 1),
	[KPCTL_A_ITERATIONS]	= NLA_POLICY_FULL_RANGE(NLA_U32, &kpctl_bench_range),
	[KPCTL_A_DEPTH]		= NLA_POLICY_RANGE(NLA_U8, 1, KPCTL_BENCH_DEPTH_MAX),
	/* The rest only appear in replies; strict validation rejects them in requests. */
};

static struct genl_family kpctl_family;

/* Report a missing attribute both as NLMSGERR_ATTR_MISS_TYPE and in words. */
#define KPCTL_REQUIRE(info, attr, msg) ({				\
	bool __missing = GENL_REQ_ATTR_CHECK(info, attr);		\
	if (__missing)							\
		GENL_SET_ERR_MSG(info, msg);				\
	__missing;							\
})

/*
 * The one rule: every command, GET and its dumps included, needs CAP_SYS_ADMIN in the
 * initial user namespace (netlink_capable()), what kprobe_events and perf's kprobes
 * ask for: the probes are global to the machine. Generic netlink's flags can only ask
 * for CAP_NET_ADMIN (GENL_ADMIN_PERM, GENL_UNS_ADMIN_PERM), which is neither needed
 * nor enough, so no command has them and each checks this first, naming what is missing.
 */
static int kpctl_check_perm(const struct sk_buff *skb, struct netlink_ext_ack *extack)
{
	if (netlink_capable(skb, CAP_SYS_ADMIN))
		return 0;
	NL_SET_ERR_MSG(extack, "kpctl_kmod needs CAP_SYS_ADMIN");
	return -EPERM;
}

/* One probe's message; cb is the dump it belongs to, or NULL for a reply. */
static int kpctl_fill_probe(struct sk_buff *skb, struct kpctl_probe *p,
			    u32 portid, u32 seq, int flags, u8 cmd,
			    struct netlink_callback *cb)
{
	struct kprobe *kp = kpctl_kprobe(p);
	u32 kflags = p->gone ? KPROBE_FLAG_GONE | (p->gone_disabled ? KPROBE_FLAG_DISABLED : 0) :
			       READ_ONCE(kp->flags);
	void *hdr;

	hdr = genlmsg_put(skb, portid, seq, &kpctl_family, flags, cmd);
	if (!hdr)
		return -EMSGSIZE;
	if (cb)
		genl_dump_check_consistent(cb, hdr);
	if (nla_put_u32(skb, KPCTL_A_ID, p->id) ||
	    nla_put_string(skb, KPCTL_A_NAME, p->name) ||
	    nla_put_string(skb, KPCTL_A_SYMBOL, p->symbol) ||
	    nla_put_u32(skb, KPCTL_A_OFFSET, p->offset) ||
	    nla_put_u8(skb, KPCTL_A_KIND, p->kind) ||
	    nla_put_u8(skb, KPCTL_A_ENABLED, !(kflags & KPROBE_FLAG_DISABLED)) ||
	    nla_put_u64_64bit(skb, KPCTL_A_ADDR, p->gone ? 0 : (unsigned long)kp->addr, KPCTL_A_PAD) ||
	    nla_put_string(skb, KPCTL_A_MODULE, p->module) ||
	    nla_put_u64_64bit(skb, KPCTL_A_HITS, atomic64_read(&p->hits), KPCTL_A_PAD) ||
	    nla_put_u64_64bit(skb, KPCTL_A_NMISSED, kp->nmissed, KPCTL_A_PAD) ||
	    nla_put_u32(skb, KPCTL_A_FLAGS, kflags | (p->stuck ? KPCTL_FLAG_STUCK : 0)))
		goto cancel;
	if (p->kind == KPCTL_KIND_RETURN) {
		if (nla_put_u32(skb, KPCTL_A_MAXACTIVE, p->rp.maxactive) ||
		    nla_put_u64_64bit(skb, KPCTL_A_RET_HITS,
				      atomic64_read(&p->ret_hits), KPCTL_A_PAD) ||
		    nla_put_u64_64bit(skb, KPCTL_A_RET_NMISSED, p->rp.nmissed,
				      KPCTL_A_PAD))
			goto cancel;
	} else if (p->kp.post_handler &&
		   nla_put_u64_64bit(skb, KPCTL_A_POST_HITS,
				     atomic64_read(&p->post_hits), KPCTL_A_PAD)) {
		goto cancel;
	}
	genlmsg_end(skb, hdr);
	return 0;

cancel:
	genlmsg_cancel(skb, hdr);
	return -EMSGSIZE;
}

/* Answer a request with the state of one probe; called with kpctl_lock held. */
static int kpctl_reply_probe(struct genl_info *info, struct kpctl_probe *p)
{
	struct sk_buff *msg;
	int err;

	msg = genlmsg_new(NLMSG_GOODSIZE, GFP_KERNEL);
	if (!msg)
		return -ENOMEM;
	err = kpctl_fill_probe(msg, p, info->snd_portid, info->snd_seq, 0,
			       info->genlhdr->cmd, NULL);
	if (err) {
		nlmsg_free(msg);
		return err;
	}
	return genlmsg_reply(msg, info);
}

static int kpctl_cmd_add(struct sk_buff *skb, struct genl_info *info)
{
	struct nlattr **attrs = info->attrs;
	struct kpctl_probe_spec spec = { .enabled = true };
	struct kpctl_probe *p;
	int err;

	err = kpctl_check_perm(skb, info->extack);
	if (err)
		return err;
	if (KPCTL_REQUIRE(info, KPCTL_A_NAME, "missing probe name") ||
	    KPCTL_REQUIRE(info, KPCTL_A_SYMBOL, "missing symbol"))
		return -EINVAL;
	spec.name = nla_data(attrs[KPCTL_A_NAME]);
	spec.symbol = nla_data(attrs[KPCTL_A_SYMBOL]);
	if (attrs[KPCTL_A_OFFSET])
		spec.offset = nla_get_u32(attrs[KPCTL_A_OFFSET]);
	if (attrs[KPCTL_A_KIND])
		spec.kind = nla_get_u8(attrs[KPCTL_A_KIND]);
	if (attrs[KPCTL_A_MAXACTIVE])
		spec.maxactive = nla_get_u32(attrs[KPCTL_A_MAXACTIVE]);
	if (attrs[KPCTL_A_ENABLED])
		spec.enabled = nla_get_u8(attrs[KPCTL_A_ENABLED]);

	mutex_lock(&kpctl_lock);
	p = kpctl_probe_add(&spec, info->extack);
	if (IS_ERR(p)) {
		err = PTR_ERR(p);
	} else {
		err = kpctl_reply_probe(info, p);
		/* A probe the caller never heard of would only leak: undo it. */
		if (err)
			kpctl_probe_remove(p, NULL);
	}
	mutex_unlock(&kpctl_lock);
	return err;
}

/* The probe named by KPCTL_A_ID, with kpctl_lock held, or an error with extack. */
static struct kpctl_probe *kpctl_probe_from_info(struct genl_info *info)
{
	struct kpctl_probe *p;

	if (KPCTL_REQUIRE(info, KPCTL_A_ID, "missing probe id"))
		return ERR_PTR(-EINVAL);
	p = kpctl_probe_find(nla_get_u32(info->attrs[KPCTL_A_ID]));
	if (!p) {
		NL_SET_ERR_MSG_ATTR(info->extack, info->attrs[KPCTL_A_ID],
				    "no probe with this id");
		return ERR_PTR(-ENOENT);
	}
	return p;
}

/*
 * The commands on one probe: the caller's rights, then the probe named by KPCTL_A_ID
 * acted on with kpctl_lock held.
 */
static int kpctl_on_probe(struct sk_buff *skb, struct genl_info *info,
			  int (*action)(struct genl_info *, struct kpctl_probe *))
{
	struct kpctl_probe *p;
	int err;

	err = kpctl_check_perm(skb, info->extack);
	if (err)
		return err;
	mutex_lock(&kpctl_lock);
	p = kpctl_probe_from_info(info);
	err = IS_ERR(p) ? PTR_ERR(p) : action(info, p);
	mutex_unlock(&kpctl_lock);
	return err;
}

static int kpctl_remove(struct genl_info *info, struct kpctl_probe *p)
{
	return kpctl_probe_remove(p, info->extack);
}

static int kpctl_enable(struct genl_info *info, struct kpctl_probe *p)
{
	return kpctl_probe_set_enabled(p, true, info->extack);
}

static int kpctl_disable(struct genl_info *info, struct kpctl_probe *p)
{
	return kpctl_probe_set_enabled(p, false, info->extack);
}

static int kpctl_cmd_remove(struct sk_buff *skb, struct genl_info *info)
{
	return kpctl_on_probe(skb, info, kpctl_remove);
}

static int kpctl_cmd_enable(struct sk_buff *skb, struct genl_info *info)
{
	return kpctl_on_probe(skb, info, kpctl_enable);
}

static int kpctl_cmd_disable(struct sk_buff *skb, struct genl_info *info)
{
	return kpctl_on_probe(skb, info, kpctl_disable);
}

static int kpctl_cmd_get(struct sk_buff *skb, struct genl_info *info)
{
	return kpctl_on_probe(skb, info, kpctl_reply_probe);
}

/*
 * What `kpctl bench` probes: a function of the module's own with an ftrace site at its
 * entry (kbuild compiles modules with -pg/-mfentry where the kernel traces functions)
 * and a few instructions after it for probes at an offset. noinline and an asm barrier
 * keep each call a real call with real work.
 */
static noinline __noclone int kpctl_bench_target(int x)
{
	int y = x * 3 + 1;

	asm volatile("" : "+r" (y));
	y ^= x >> 1;
	asm volatile("" : "+r" (y));
	return y + 7;
}

/*
 * A recursion of known depth, depth + 1 calls deep, for tests of tools that time
 * nested calls (kpctl latency). The asm keeps the call out of tail position, so the
 * compiler cannot turn the recursion into a loop.
 */
static noinline __noclone int kpctl_bench_recursive(int depth)
{
	int y = depth ? kpctl_bench_recursive(depth - 1) : 0;

	asm volatile("" : "+r" (y));
	return y + 1;
}

/*
 * Why a bench must stop now, checked every 1024 calls: any signal (the client's Ctrl-C
 * and SIGTERM are caught, not fatal, and would otherwise wait for the end), the module
 * going away (rmmod's genl_unregister_family() waits for this request, and every
 * generic netlink user with it), or its time cap.
 */
static int kpctl_bench_stop(u64 start, struct genl_info *info)
{
	if (signal_pending(current)) {
		GENL_SET_ERR_MSG(info, "a signal stopped the bench");
		return -EINTR;
	}
	if (READ_ONCE(THIS_MODULE->state) == MODULE_STATE_GOING) {
		GENL_SET_ERR_MSG(info, "the module is being unloaded");
		return -ESHUTDOWN;
	}
	if (ktime_get_ns() - start > KPCTL_BENCH_SECONDS_MAX * NSEC_PER_SEC) {
		GENL_SET_ERR_MSG(info, "a bench stops after " __stringify(KPCTL_BENCH_SECONDS_MAX) " seconds");
		return -ETIME;
	}
	return 0;
}

/*
 * Call the bench target (or, given a DEPTH, the recursive one) ITERATIONS times and
 * report how long that took. Process context: every 1024 calls it may reschedule
 * (probes cost microseconds each under emulation: millions of calls must not hold the
 * CPU for seconds) and it stops if kpctl_bench_stop() says so. Without kpctl_lock: it
 * touches no probe.
 */
static int kpctl_cmd_bench(struct sk_buff *skb, struct genl_info *info)
{
	struct sk_buff *msg;
	u32 i, iterations, depth = 0;
	u64 start, elapsed;
	int sum = 0, err;
	void *hdr;

	err = kpctl_check_perm(skb, info->extack);
	if (err)
		return err;
	if (KPCTL_REQUIRE(info, KPCTL_A_ITERATIONS, "missing iterations"))
		return -EINVAL;
	iterations = nla_get_u32(info->attrs[KPCTL_A_ITERATIONS]);
	if (info->attrs[KPCTL_A_DEPTH])
		depth = nla_get_u8(info->attrs[KPCTL_A_DEPTH]);
	start = ktime_get_ns();
	for (i = 0; i < iterations; i++) {
		sum += depth ? kpctl_bench_recursive(depth) : kpctl_bench_target(i);
		if ((i & 1023) == 1023) {
			err = kpctl_bench_stop(start, info);
			if (err)
				return err;
			cond_resched();
		}
	}
	elapsed = ktime_get_ns() - start;
	msg = genlmsg_new(NLMSG_GOODSIZE, GFP_KERNEL);
	if (!msg)
		return -ENOMEM;
	hdr = genlmsg_put_reply(msg, info, &kpctl_family, 0, KPCTL_CMD_BENCH);
	if (!hdr || nla_put_u32(msg, KPCTL_A_ITERATIONS, iterations) ||
	    nla_put_u64_64bit(msg, KPCTL_A_ELAPSED_NS, elapsed, KPCTL_A_PAD)) {
		nlmsg_free(msg);
		return -EMSGSIZE;
	}
	genlmsg_end(msg, hdr);
	/* The sum keeps the calls from being optimized away; it is never reported. */
	barrier_data(&sum);
	return genlmsg_reply(msg, info);
}

/*
 * One skb of probes per call; cb->args[0] is the next id to send. Ids only grow and
 * the list is sorted by id, so probes removed between calls are simply not seen; but
 * a name removed and added again between calls could be sent twice, so a dump during
 * which probes came or went is flagged NLM_F_DUMP_INTR (as rtnetlink does with
 * dev_base_seq) and the client takes it again.
 */
static int kpctl_cmd_dump(struct sk_buff *skb, struct netlink_callback *cb)
{
	u32 next = cb->args[0];
	struct kpctl_probe *p;
	int err;

	err = kpctl_check_perm(cb->skb, cb->extack);
	if (err)
		return err;
	mutex_lock(&kpctl_lock);
	cb->seq = kpctl_generation;
	list_for_each_entry(p, &kpctl_probes, node) {
		if (p->id < next)
			continue;
		if (kpctl_fill_probe(skb, p, NETLINK_CB(cb->skb).portid,
				     cb->nlh->nlmsg_seq, NLM_F_MULTI,
				     KPCTL_CMD_GET, cb))
			break;
		next = p->id + 1;
	}
	mutex_unlock(&kpctl_lock);
	cb->args[0] = next;
	return skb->len;
}

static const struct genl_small_ops kpctl_ops[] = {
	{
		.cmd = KPCTL_CMD_ADD,
		.doit = kpctl_cmd_add,
	},
	{
		.cmd = KPCTL_CMD_REMOVE,
		.doit = kpctl_cmd_remove,
	},
	{
		.cmd = KPCTL_CMD_ENABLE,
		.doit = kpctl_cmd_enable,
	},
	{
		.cmd = KPCTL_CMD_DISABLE,
		.doit = kpctl_cmd_disable,
	},
	{
		.cmd = KPCTL_CMD_GET,
		.doit = kpctl_cmd_get,
		.dumpit = kpctl_cmd_dump,
	},
	{
		.cmd = KPCTL_CMD_BENCH,
		.doit = kpctl_cmd_bench,
	},
};

static struct genl_family kpctl_family __ro_after_init = {
	.name = KPCTL_GENL_NAME,
	.version = KPCTL_GENL_VERSION,
	.maxattr = KPCTL_A_MAX,
	.policy = kpctl_policy,
	/* kpctl_lock serializes what needs it; no need for genl_mutex. */
	.parallel_ops = true,
	/* A caller in another network namespace still needs CAP_SYS_ADMIN in the initial one. */
	.netnsok = true,
	.module = THIS_MODULE,
	.small_ops = kpctl_ops,
	.n_small_ops = ARRAY_SIZE(kpctl_ops),
	/*
	 * Since v6.1 commands from resv_start_op on get strict checks of the header's
	 * reserved byte and of attributes; all of ours are new, so all of them.
	 */
	.resv_start_op = KPCTL_CMD_ADD,
};

static int __init kpctl_init(void)
{
	int err;

	err = kpctl_probes_watch_modules();
	if (err)
		return err;
	err = genl_register_family(&kpctl_family);
	if (err)
		kpctl_probes_unwatch_modules();
	return err;
}

/*
 * Unregistering the family first waits for running requests (and an open dump holds
 * a module reference), so nothing can add a probe while the rest are unregistered.
 */
static void __exit kpctl_exit(void)
{
	genl_unregister_family(&kpctl_family);
	kpctl_probes_unwatch_modules();
	kpctl_probes_remove_all();
}

module_init(kpctl_init);
module_exit(kpctl_exit);

MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("kpctl: kprobes and kretprobes managed over generic netlink");
MODULE_ALIAS_GENL_FAMILY(KPCTL_GENL_NAME);
