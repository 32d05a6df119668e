// SPDX-License-Identifier: GPL-2.0
/*
 * A module kpctl's kernel tests load and unload: functions with ftrace sites to probe,
 * each called on request through a parameter, and kpctl_twin, a name kpctl_post.ko has
 * too (kallsyms then knows it twice).
 *
 *   echo 5 > /sys/module/kpctl_target/parameters/calls   # kpctl_target_fn() 5 times
 *   echo 1 > /sys/module/kpctl_target/parameters/poke    # each kpctl_target_N() once
 */
#include <linux/compiler.h>
#include <linux/kernel.h>
#include <linux/module.h>
#include <linux/moduleparam.h>

#define KPCTL_TARGET_CALLS_MAX	1000000

/* noipa: no clone (foo.constprop.0) may take the calls the tests count on foo. */
#define KPCTL_TARGET_FN __attribute__((__noipa__))

int kpctl_target_fn(int x);
int kpctl_target_0(int x);
int kpctl_target_1(int x);
int kpctl_target_2(int x);
int kpctl_target_3(int x);
int kpctl_twin(int x);

static volatile int kpctl_target_sink;

KPCTL_TARGET_FN int kpctl_target_fn(int x)
{
	kpctl_target_sink += x;
	return kpctl_target_sink;
}

/* One function per test that may leave a probe on it for good. */
#define KPCTL_TARGET(n) \
	KPCTL_TARGET_FN int kpctl_target_##n(int x) { kpctl_target_sink += x + n; return kpctl_target_sink; }
KPCTL_TARGET(0)
KPCTL_TARGET(1)
KPCTL_TARGET(2)
KPCTL_TARGET(3)

KPCTL_TARGET_FN int kpctl_twin(int x)
{
	kpctl_target_sink ^= x;
	return kpctl_target_sink;
}

static int kpctl_target_calls_set(const char *val, const struct kernel_param *kp)
{
	unsigned int calls, i;
	int err;

	err = kstrtouint(val, 0, &calls);
	if (err)
		return err;
	if (calls > KPCTL_TARGET_CALLS_MAX)
		return -ERANGE;
	for (i = 0; i < calls; i++)
		kpctl_target_fn(i);
	return 0;
}

static int kpctl_target_poke_set(const char *val, const struct kernel_param *kp)
{
	kpctl_target_0(1);
	kpctl_target_1(1);
	kpctl_target_2(1);
	kpctl_target_3(1);
	kpctl_twin(1);
	return 0;
}

static const struct kernel_param_ops kpctl_target_calls_ops = { .set = kpctl_target_calls_set };
static const struct kernel_param_ops kpctl_target_poke_ops = { .set = kpctl_target_poke_set };
module_param_cb(calls, &kpctl_target_calls_ops, NULL, 0200);
MODULE_PARM_DESC(calls, "call kpctl_target_fn() this many times");
module_param_cb(poke, &kpctl_target_poke_ops, NULL, 0200);
MODULE_PARM_DESC(poke, "call each kpctl_target_N() and kpctl_twin() once");

MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("kpctl's kernel tests: functions to probe in a module that comes and goes");
