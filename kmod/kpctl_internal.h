/* SPDX-License-Identifier: GPL-2.0 */
/* Shared between kpctl_kmod's probe registry and its generic netlink front end. */
#ifndef _KPCTL_INTERNAL_H
#define _KPCTL_INTERNAL_H

#include <linux/atomic.h>
#include <linux/kallsyms.h>
#include <linux/kprobes.h>
#include <linux/list.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/netlink.h>

#include "kpctl_kmod.h"

struct kpctl_probe {
	struct list_head node;		/* in kpctl_probes, sorted by id */
	u32 id;
	enum kpctl_kind kind;
	u32 offset;
	unsigned long addr;		/* resolved before registering */
	char name[KPCTL_NAME_MAX + 1];
	char symbol[KSYM_NAME_LEN];	/* kp.symbol_name points here */
	union {
		struct kprobe kp;	/* KPCTL_KIND_ENTRY */
		struct kretprobe rp;	/* KPCTL_KIND_RETURN */
	};
	/* Written by the handlers in atomic context, read under kpctl_lock. */
	atomic64_t hits;
	atomic64_t post_hits;
	atomic64_t ret_hits;
	bool stuck;			/* the kernel kept it after unregistering: never freed */
	char module[MODULE_NAME_LEN];	/* the module that holds the probed code, "" for vmlinux */
	/*
	 * That module went away: the probe is out of the kernel's tables (nothing to
	 * unregister, no stale address) until the module comes back and it re-arms.
	 */
	bool gone;
	bool gone_disabled;		/* it was disabled when it went: re-armed disabled */
};

/* What KPCTL_CMD_ADD asks for, validated by the netlink policy. */
struct kpctl_probe_spec {
	const char *name;
	const char *symbol;
	u32 offset;
	enum kpctl_kind kind;
	u32 maxactive;			/* 0: the kernel's default */
	bool enabled;
};

/* Protects kpctl_probes and every probe's registration state. */
extern struct mutex kpctl_lock;
extern struct list_head kpctl_probes;
/* Changes with every probe added or removed; a dump that spans a change is flagged. */
extern unsigned int kpctl_generation;

static inline struct kprobe *kpctl_kprobe(struct kpctl_probe *p)
{
	return p->kind == KPCTL_KIND_RETURN ? &p->rp.kp : &p->kp;
}

/* All of these need kpctl_lock held. */
struct kpctl_probe *kpctl_probe_find(u32 id);
struct kpctl_probe *kpctl_probe_add(const struct kpctl_probe_spec *spec,
				    struct netlink_ext_ack *extack);
int kpctl_probe_remove(struct kpctl_probe *p, struct netlink_ext_ack *extack);
int kpctl_probe_set_enabled(struct kpctl_probe *p, bool enabled,
			    struct netlink_ext_ack *extack);

void kpctl_probes_remove_all(void);

/* Disarm the probes on a module that goes, re-arm them when it comes back. */
int kpctl_probes_watch_modules(void);
void kpctl_probes_unwatch_modules(void);

#endif /* _KPCTL_INTERNAL_H */
