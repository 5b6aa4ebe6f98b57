/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Log2 histograms whose bucket bounds are exact powers of two *seconds*.
 *
 * A duration is measured in units of 2^-20 s (about 0.95 us). Slot k holds
 * durations d with 2^(k-1) < d <= 2^k units, i.e. upper bound 2^(k-20) s;
 * slot 0 holds d <= 2^-20 s. Because every bound is a power of two in the
 * exported unit, the same counts are exact for a Prometheus classic
 * histogram (le = 2^(k-20)), an OTel base-2 exponential histogram at scale 0
 * (index k-21) and a Prometheus native histogram at schema 0 (index k-20).
 * Bucketing uses integer maths only, so values on a bound are never
 * misplaced: see kt_slot().
 */
#ifndef __KT_HIST_H__
#define __KT_HIST_H__

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

/* Slot 47 is the overflow slot: > 2^26 s (776 days). */
#define KT_HIST_SLOTS 48

struct kt_hist {
	__u64 slots[KT_HIST_SLOTS];
	__u64 sum_ns; /* exact sum of the observations, in nanoseconds */
};

/* Smallest k with 2^k >= v, for v >= 1. */
static __always_inline __u32 kt_ceil_log2(__u64 v)
{
	__u32 k = 0;
	__u64 x = v - 1;

	if (v <= 1)
		return 0;
	/* floor(log2(v-1)) + 1, branch-light and verifier friendly */
	if (x >> 32) { k += 32; x >>= 32; }
	if (x >> 16) { k += 16; x >>= 16; }
	if (x >> 8)  { k += 8;  x >>= 8; }
	if (x >> 4)  { k += 4;  x >>= 4; }
	if (x >> 2)  { k += 2;  x >>= 2; }
	if (x >> 1)  { k += 1; }
	return k + 1;
}

/*
 * Slot of a duration in nanoseconds. 1 unit = 2^-20 s = 10^9/2^20 ns
 * = 1953125/2048 ns, so units = ns * 2048 / 1953125, and
 * ceil(log2(units)) == ceil(log2(ceil(units))) because bounds are integers.
 * ns * 2048 stays below 2^64 up to 104 days; longer values saturate.
 */
static __always_inline __u32 kt_slot_ns(__u64 ns)
{
	__u64 units;
	__u32 k;

	if (ns >= (1ULL << 53))
		return KT_HIST_SLOTS - 1;
	units = (ns * 2048 + 1953124) / 1953125;
	k = kt_ceil_log2(units);
	return k < KT_HIST_SLOTS ? k : KT_HIST_SLOTS - 1;
}

static __always_inline void kt_hist_add_ns(struct kt_hist *h, __u64 ns)
{
	__u32 k = kt_slot_ns(ns);

	/* The bound check keeps the verifier sure of the index. Atomic: the
	 * value is shared by all CPUs (see kt_maps.h). */
	if (k < KT_HIST_SLOTS)
		__sync_fetch_and_add(&h->slots[k], 1);
	__sync_fetch_and_add(&h->sum_ns, ns);
}

#endif /* __KT_HIST_H__ */
