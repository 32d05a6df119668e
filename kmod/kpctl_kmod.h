/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The generic netlink ABI of kpctl_kmod. kpctl/kmod/messages.py mirrors it and
 * tests/host/test_kmod_messages.py checks that the two agree: append, never renumber.
 */
#ifndef _KPCTL_KMOD_H
#define _KPCTL_KMOD_H

#define KPCTL_GENL_NAME		"kpctl"
#define KPCTL_GENL_VERSION	1

#define KPCTL_NAME_MAX		63	/* probe name length, without the NUL */
#define KPCTL_MAXACTIVE_MAX	4096	/* kretprobe instances per probe */
#define KPCTL_MAX_PROBES_LIMIT	4096	/* upper bound of the max_probes parameter */
#define KPCTL_MAX_INSTANCES_LIMIT	(1 << 20)	/* upper bound of max_instances */
#define KPCTL_BENCH_MAX		100000000	/* iterations of one KPCTL_CMD_BENCH */
#define KPCTL_BENCH_TARGET	"kpctl_bench_target"	/* what KPCTL_CMD_BENCH calls */
#define KPCTL_BENCH_RECURSIVE	"kpctl_bench_recursive"	/* ... with a DEPTH */
#define KPCTL_BENCH_DEPTH_MAX	16	/* its recursion: stack stays small */
#define KPCTL_BENCH_SECONDS_MAX	60	/* a longer KPCTL_CMD_BENCH stops with ETIME */
/* In KPCTL_A_FLAGS beside KPROBE_FLAG_*: the kernel kept the probe after unregistering it. */
#define KPCTL_FLAG_STUCK	0x80000000

enum kpctl_cmd {
	KPCTL_CMD_UNSPEC,
	KPCTL_CMD_ADD,		/* NAME, SYMBOL, [OFFSET, KIND, MAXACTIVE, ENABLED] */
	KPCTL_CMD_REMOVE,	/* ID */
	KPCTL_CMD_ENABLE,	/* ID */
	KPCTL_CMD_DISABLE,	/* ID */
	KPCTL_CMD_GET,		/* ID, or a dump of every probe */
	KPCTL_CMD_BENCH,	/* ITERATIONS, [DEPTH]: call the bench target; reply ELAPSED_NS */
	__KPCTL_CMD_MAX,
};

enum kpctl_kind {
	KPCTL_KIND_ENTRY,	/* struct kprobe */
	KPCTL_KIND_RETURN,	/* struct kretprobe */
};

enum kpctl_attr {
	KPCTL_A_UNSPEC,
	KPCTL_A_PAD,
	KPCTL_A_ID,		/* u32 */
	KPCTL_A_NAME,		/* string, [A-Za-z0-9_], at most KPCTL_NAME_MAX */
	KPCTL_A_SYMBOL,		/* string, a kallsyms name */
	KPCTL_A_OFFSET,		/* u32, bytes into SYMBOL */
	KPCTL_A_KIND,		/* u8, enum kpctl_kind */
	KPCTL_A_MAXACTIVE,	/* u32, return probes only */
	KPCTL_A_ENABLED,	/* u8, 0 or 1 */
	KPCTL_A_ADDR,		/* u64, resolved probe address (reply only) */
	KPCTL_A_HITS,		/* u64, pre_handler or entry_handler calls */
	KPCTL_A_POST_HITS,	/* u64, post_handler calls (entry probes off ftrace sites) */
	KPCTL_A_RET_HITS,	/* u64, return handler calls (return probes) */
	KPCTL_A_NMISSED,	/* u64, kprobe.nmissed: hits skipped on reentry */
	KPCTL_A_RET_NMISSED,	/* u64, kretprobe.nmissed: no free instance */
	KPCTL_A_FLAGS,		/* u32, KPROBE_FLAG_* of the probe */
	KPCTL_A_ITERATIONS,	/* u32, 1..KPCTL_BENCH_MAX calls of the bench target */
	KPCTL_A_ELAPSED_NS,	/* u64, their time (reply only) */
	KPCTL_A_DEPTH,		/* u8, 1..KPCTL_BENCH_DEPTH_MAX: call the recursive target */
	KPCTL_A_MODULE,		/* string, the module holding the probed code, "" for vmlinux (reply only) */
	__KPCTL_A_MAX,
};
#define KPCTL_A_MAX (__KPCTL_A_MAX - 1)

#endif /* _KPCTL_KMOD_H */
