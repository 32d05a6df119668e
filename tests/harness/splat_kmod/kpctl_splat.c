// SPDX-License-Identifier: GPL-2.0
/*
 * The guest harness's own test module: makes the kernel splat on purpose, as told by
 * its "what" parameter, so that tests/harness can check that the harness stops the
 * guest at once and shows why. Never part of kpctl.
 */
#include <linux/bug.h>
#include <linux/jiffies.h>
#include <linux/module.h>
#include <linux/preempt.h>
#include <linux/string.h>

static char *what = "warn";
module_param(what, charp, 0444);
MODULE_PARM_DESC(what, "warn (a WARN) or softlockup (a CPU that never schedules)");

static int __init kpctl_splat_init(void)
{
	unsigned long until = jiffies + 120 * HZ;

	if (!strcmp(what, "warn")) {
		WARN(1, "kpctl_splat: a WARN on purpose\n");
	} else if (!strcmp(what, "softlockup")) {
		/* The soft lockup detector reports after 2 * watchdog_thresh (20 s). */
		preempt_disable();
		while (time_before(jiffies, until))
			cpu_relax();
		preempt_enable();
	} else {
		return -EINVAL;
	}
	/* Done: nothing to keep loaded. */
	return -EAGAIN;
}

module_init(kpctl_splat_init);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("kpctl harness test: a kernel splat on purpose");
