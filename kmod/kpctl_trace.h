/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Hits of kpctl_kmod's probes as trace events, read from trace_pipe like any other.
 * The system is not "kpctl": that is the default group of kpctl's kprobe_events
 * probes, and a group and a system share one namespace under events/.
 *
 * The printed lines have the shape of kprobe_events lines, "(sym+off/size) args" for
 * entry probes and "(caller+off/size <- func) args" for return probes, so that one
 * parser serves both backends.
 */
#undef TRACE_SYSTEM
#define TRACE_SYSTEM kpctl_kmod

#if !defined(_KPCTL_TRACE_H) || defined(TRACE_HEADER_MULTI_READ)
#define _KPCTL_TRACE_H

#include <linux/tracepoint.h>
#include <linux/version.h>

/* v6.10 dropped the source argument of __assign_str(): it comes from __string(). */
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 10, 0)
#define kpctl_assign_str(dst, src) __assign_str(dst)
#else
#define kpctl_assign_str(dst, src) __assign_str(dst, src)
#endif

TRACE_EVENT(kprobe_hit,
	TP_PROTO(u32 id, const char *name, unsigned long ip),
	TP_ARGS(id, name, ip),
	TP_STRUCT__entry(
		__field(u32, id)
		__field(unsigned long, ip)
		__string(name, name)
	),
	TP_fast_assign(
		__entry->id = id;
		__entry->ip = ip;
		kpctl_assign_str(name, name);
	),
	TP_printk("(%pS) name=%s id=%u",
		  (void *)__entry->ip, __get_str(name), __entry->id)
);

TRACE_EVENT(kretprobe_hit,
	TP_PROTO(u32 id, const char *name, unsigned long func,
		 unsigned long ret_ip, long retval, u64 latency_ns),
	TP_ARGS(id, name, func, ret_ip, retval, latency_ns),
	TP_STRUCT__entry(
		__field(u32, id)
		__field(unsigned long, func)
		__field(unsigned long, ret_ip)
		__field(long, retval)
		__field(u64, latency_ns)
		__string(name, name)
	),
	TP_fast_assign(
		__entry->id = id;
		__entry->func = func;
		__entry->ret_ip = ret_ip;
		__entry->retval = retval;
		__entry->latency_ns = latency_ns;
		kpctl_assign_str(name, name);
	),
	TP_printk("(%pS <- %ps) name=%s id=%u ret=%ld latency_ns=%llu",
		  (void *)__entry->ret_ip, (void *)__entry->func,
		  __get_str(name), __entry->id, __entry->retval,
		  __entry->latency_ns)
);

#endif /* _KPCTL_TRACE_H */

/* Out of tree: define_trace.h must find this header beside the module's sources. */
#undef TRACE_INCLUDE_PATH
#define TRACE_INCLUDE_PATH .
#undef TRACE_INCLUDE_FILE
#define TRACE_INCLUDE_FILE kpctl_trace
#include <trace/define_trace.h>
