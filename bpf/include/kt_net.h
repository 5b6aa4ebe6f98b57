/* SPDX-License-Identifier: GPL-2.0 */
/* Socket helpers: addresses (IPv4 as v4-mapped IPv6), ports, states. */
#ifndef __KT_NET_H__
#define __KT_NET_H__

#include "vmlinux.h"
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>

#define KT_AF_INET 2
#define KT_AF_INET6 10
#define KT_IPPROTO_TCP 6

enum {
	KT_TCP_ESTABLISHED = 1,
	KT_TCP_SYN_SENT = 2,
	KT_TCP_SYN_RECV = 3,
	KT_TCP_FIN_WAIT1 = 4,
	KT_TCP_FIN_WAIT2 = 5,
	KT_TCP_TIME_WAIT = 6,
	KT_TCP_CLOSE = 7,
	KT_TCP_CLOSE_WAIT = 8,
	KT_TCP_LAST_ACK = 9,
	KT_TCP_LISTEN = 10,
	KT_TCP_CLOSING = 11,
};

/* enum sock_flags: set by tcp_fin() when the peer's FIN arrived. */
#define KT_SOCK_DONE 1

/* Remote (peer) address of a socket as 16 bytes; IPv4 becomes ::ffff:a.b.c.d. */
/* All of these read through BTF pointers: direct, CO-RE relocated loads. */
static __always_inline void kt_v4_mapped(__u8 out[16], __be32 addr)
{
	__builtin_memset(out, 0, 10);
	out[10] = 0xff;
	out[11] = 0xff;
	*(__be32 *)&out[12] = addr;
}

static __always_inline void kt_peer_addr(const struct sock_common *skc, __u8 out[16])
{
	if (skc->skc_family == KT_AF_INET6)
		__builtin_memcpy(out, skc->skc_v6_daddr.in6_u.u6_addr8, 16);
	else
		kt_v4_mapped(out, skc->skc_daddr);
}

static __always_inline void kt_local_addr(const struct sock_common *skc, __u8 out[16])
{
	if (skc->skc_family == KT_AF_INET6)
		__builtin_memcpy(out, skc->skc_v6_rcv_saddr.in6_u.u6_addr8, 16);
	else
		kt_v4_mapped(out, skc->skc_rcv_saddr);
}

static __always_inline __u16 kt_peer_port(const struct sock_common *skc)
{
	return bpf_ntohs(skc->skc_dport);
}

static __always_inline __u16 kt_local_port(const struct sock_common *skc)
{
	return skc->skc_num;
}

#endif /* __KT_NET_H__ */
