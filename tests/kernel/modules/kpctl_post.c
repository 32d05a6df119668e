// SPDX-License-Identifier: GPL-2.0
/*
 * A third party's kprobe with a post_handler, for kpctl's kernel tests: it joins (or
 * is joined by) kpctl_kmod's probe on one address, which on an ftrace site makes the
 * kernel disarm the shared probe through the ftrace_ops it was not armed with (see
 * kpctl_entry_handlers() in kmod/kpctl_probes.c). Like kpctl_kmod it never frees a
 * probe the kernel kept after unregistering it, and then pins itself.
 *
 *   echo kpctl_target_0 > /sys/module/kpctl_post/parameters/probe
 *   echo kpctl_target_0 > /sys/module/kpctl_post/parameters/unprobe
 *   cat /sys/module/kpctl_post/parameters/probes   # SYMBOL HITS POST_HITS [stuck]
 */
#include <linux/kprobes.h>
#include <linux/list.h>
#include <linux/module.h>
#include <linux/moduleparam.h>
#include <linux/mutex.h>
#include <linux/slab.h>
#include <linux/string.h>
#include <linux/ctype.h>

struct kpctl_post_probe {
	struct list_head node;
	struct kprobe kp;
	char symbol[KSYM_NAME_LEN];
	atomic64_t hits;
	atomic64_t post_hits;
	bool stuck;
};

static LIST_HEAD(kpctl_post_probes);
static DEFINE_MUTEX(kpctl_post_lock);

static int kpctl_post_pre(struct kprobe *kp, struct pt_regs *regs)
{
	atomic64_inc(&container_of(kp, struct kpctl_post_probe, kp)->hits);
	return 0;
}

static void kpctl_post_post(struct kprobe *kp, struct pt_regs *regs, unsigned long flags)
{
	atomic64_inc(&container_of(kp, struct kpctl_post_probe, kp)->post_hits);
}
NOKPROBE_SYMBOL(kpctl_post_pre);
NOKPROBE_SYMBOL(kpctl_post_post);

static int kpctl_post_probe_set(const char *val, const struct kernel_param *kparam)
{
	struct kpctl_post_probe *p;
	int err;

	p = kzalloc(sizeof(*p), GFP_KERNEL);
	if (!p)
		return -ENOMEM;
	/* No leading blanks left, so strim() trims in place. */
	strscpy(p->symbol, skip_spaces(val), sizeof(p->symbol));
	strim(p->symbol);
	p->kp.symbol_name = p->symbol;
	p->kp.pre_handler = kpctl_post_pre;
	p->kp.post_handler = kpctl_post_post;
	err = register_kprobe(&p->kp);
	if (err) {
		kfree(p);
		return err;
	}
	mutex_lock(&kpctl_post_lock);
	list_add_tail(&p->node, &kpctl_post_probes);
	mutex_unlock(&kpctl_post_lock);
	return 0;
}

/* unregister_kprobe() NULLs the address of a probe the kernel could not let go of. */
static void kpctl_post_unregister(struct kpctl_post_probe *p)
{
	unregister_kprobe(&p->kp);
	if (p->kp.addr) {
		list_del(&p->node);
		kfree(p);
		return;
	}
	p->stuck = true;
	__module_get(THIS_MODULE);
	pr_warn("kpctl_post: the kernel kept the probe on %s: it stays, and the module with it\n",
		p->symbol);
}

static int kpctl_post_unprobe_set(const char *val, const struct kernel_param *kparam)
{
	struct kpctl_post_probe *p;
	char symbol[KSYM_NAME_LEN];
	int err = -ENOENT;

	strscpy(symbol, skip_spaces(val), sizeof(symbol));
	strim(symbol);
	mutex_lock(&kpctl_post_lock);
	list_for_each_entry(p, &kpctl_post_probes, node) {
		if (!p->stuck && !strcmp(p->symbol, symbol)) {
			kpctl_post_unregister(p);
			err = 0;
			break;
		}
	}
	mutex_unlock(&kpctl_post_lock);
	return err;
}

static int kpctl_post_probes_get(char *buf, const struct kernel_param *kparam)
{
	struct kpctl_post_probe *p;
	int len = 0;

	mutex_lock(&kpctl_post_lock);
	list_for_each_entry(p, &kpctl_post_probes, node)
		len += scnprintf(buf + len, PAGE_SIZE - len, "%s %lld %lld%s\n", p->symbol,
				 atomic64_read(&p->hits), atomic64_read(&p->post_hits),
				 p->stuck ? " stuck" : "");
	mutex_unlock(&kpctl_post_lock);
	return len;
}

static const struct kernel_param_ops kpctl_post_probe_ops = { .set = kpctl_post_probe_set };
static const struct kernel_param_ops kpctl_post_unprobe_ops = { .set = kpctl_post_unprobe_set };
static const struct kernel_param_ops kpctl_post_probes_ops = { .get = kpctl_post_probes_get };
module_param_cb(probe, &kpctl_post_probe_ops, NULL, 0200);
MODULE_PARM_DESC(probe, "register a kprobe with a post_handler on this symbol");
module_param_cb(unprobe, &kpctl_post_unprobe_ops, NULL, 0200);
MODULE_PARM_DESC(unprobe, "unregister the kprobe on this symbol");
module_param_cb(probes, &kpctl_post_probes_ops, NULL, 0444);
MODULE_PARM_DESC(probes, "the probes: SYMBOL HITS POST_HITS [stuck]");

/* A stuck probe pins the module: none is left here. */
static void __exit kpctl_post_exit(void)
{
	struct kpctl_post_probe *p, *tmp;

	mutex_lock(&kpctl_post_lock);
	list_for_each_entry_safe(p, tmp, &kpctl_post_probes, node)
		kpctl_post_unregister(p);
	mutex_unlock(&kpctl_post_lock);
}
module_exit(kpctl_post_exit);

/* The name kpctl_target.ko has too (its own is another function). */
int kpctl_twin(int x);
__attribute__((__noipa__)) int kpctl_twin(int x)
{
	return x + 1;
}

MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("kpctl's kernel tests: a third party's kprobe with a post_handler");
