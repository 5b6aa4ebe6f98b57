/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Map helpers shared by every collector.
 *
 * Aggregation maps are shared hashes (one value for all CPUs) updated with
 * atomic adds. A per-CPU hash would need no atomics, but the kernel gives
 * each of its entries a copy per *possible* CPU: on a 192-CPU node that is
 * 192x the memory for values that a few CPUs ever touch. Atomics are also
 * what keeps a value exact when a softirq interrupts a process-context
 * update of it on the same CPU. Maps are allocated as entries are used
 * (BPF_F_NO_PREALLOC) wherever the attach point may allocate; see each map.
 *
 * Every map is bounded; when one is full the event is added to the map's
 * reserved overflow key (created by userspace before attach) and counted in
 * kt_drops, so totals stay exact and the loss of detail is visible.
 */
#ifndef __KT_MAPS_H__
#define __KT_MAPS_H__

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

#ifndef EEXIST
#define EEXIST 17
#endif

/* Index into kt_drops: one counter per map that can overflow. */
#define KT_DROP_SLOTS 8

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, KT_DROP_SLOTS);
	__type(key, __u32);
	__type(value, __u64);
} kt_drops SEC(".maps");

static __always_inline void kt_count_drop(__u32 slot)
{
	__u64 *n = bpf_map_lookup_elem(&kt_drops, &slot);

	if (n)
		__sync_fetch_and_add(n, 1);
}

/*
 * Returns the value for key, inserting `zero` first if needed.
 * Two CPUs may insert the same new key at once: the loser gets -EEXIST,
 * and the lookup that follows finds the winner's entry, so no update is
 * lost. When the map is full, the value of `overflow_key` is returned
 * instead and the drop is counted in kt_drops[drop_slot].
 */
static __always_inline void *kt_lookup_or_init(void *map, const void *key,
					       const void *zero,
					       const void *overflow_key,
					       __u32 drop_slot)
{
	void *val = bpf_map_lookup_elem(map, key);
	long err;

	if (val)
		return val;
	err = bpf_map_update_elem(map, key, zero, BPF_NOEXIST);
	if (err == 0 || err == -EEXIST) {
		val = bpf_map_lookup_elem(map, key);
		if (val)
			return val;
	}
	kt_count_drop(drop_slot);
	return bpf_map_lookup_elem(map, overflow_key);
}

#endif /* __KT_MAPS_H__ */
