/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * The messages between tetherd's two processes, over a SOCK_SEQPACKET
 * socketpair (one message per packet), in the manner of OpenBSD's imsg: a
 * {type, len} header, a fixed part whose size is checked exactly on
 * receipt, and for some types a variable tail whose length the fixed part
 * announces, also checked exactly.
 *
 *  channel -> scheduler: RUN, POLICY, SITE_KEY, SITE_CHAIN, PING, PONG, STATUS
 *  scheduler -> channel: DONE, POLICY_REQUEST, PING, PONG
 *
 * The scheduler process (root) accepts nothing else; it is the reason for
 * this file.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/tasktype.h"
#include "transport/guid.h"

enum priv_type {
        PRIV_RUN = 1,        /* run a cycle for a task (or a local trigger: empty GUID) */
        PRIV_DONE,           /* the cycle's outcome */
        PRIV_POLICY_REQUEST, /* the scheduler needs a policy */
        PRIV_POLICY,         /* the answer: result, body, signature */
        PRIV_SITE_KEY,       /* the trusted site key (DER SPKI) */
        PRIV_PING,
        PRIV_PONG,
        PRIV_STATUS,     /* a status line for sd_notify STATUS= */
        PRIV_SITE_CHAIN, /* the site key chain's text (transport/rotation.h), which
                          * the scheduler verifies from its own key */
        PRIV_TYPE_MAX,
};

#define PRIV_USER_MAX 256u
#define PRIV_PARAM_MAX 65536u
#define PRIV_DETAIL_MAX TETHER_DETAIL_MAX
#define PRIV_POLICY_MAX (4u * 1024u * 1024u)
#define PRIV_SIG_MAX 1024u
#define PRIV_KEY_MAX 4096u
#define PRIV_STATUS_MAX 512u
#define PRIV_CHAIN_MAX (64u * 1024u)
/* The largest packet either side ever sends. */
#define PRIV_MSG_MAX (sizeof(struct priv_hdr) + sizeof(struct priv_policy) + PRIV_POLICY_MAX + PRIV_SIG_MAX)

struct priv_hdr {
        uint32_t type;
        uint32_t len; /* whole message, header included */
};

struct priv_run {
        uint32_t cycle;
        char task_guid[TETHER_GUID_LEN]; /* "" for a local trigger */
        uint32_t param_len;              /* bytes of TaskParam after this struct */
};

struct priv_done {
        uint32_t cycle;
        char task_guid[TETHER_GUID_LEN];
        uint32_t return_code;
        uint32_t detail_len; /* bytes of Detail after this struct */
};

struct priv_policy_request {
        char user[PRIV_USER_MAX]; /* "" for the machine policy */
};

struct priv_policy {
        char user[PRIV_USER_MAX];
        uint32_t result; /* enum tether_policy_result */
        int32_t error;
        uint32_t body_len;
        uint32_t sig_len;
};

struct priv_site_key {
        uint32_t der_len;
};

struct priv_ping {
        uint64_t seq;
};

struct priv_status {
        uint32_t text_len;
};

struct priv_site_chain {
        uint32_t text_len;
};

/* A received, checked message. Pointers borrow from the packet buffer. */
struct priv_msg {
        enum priv_type type;
        union {
                struct priv_run run;
                struct priv_done done;
                struct priv_policy_request policy_request;
                struct priv_policy policy;
                struct priv_site_key site_key;
                struct priv_ping ping;
                struct priv_status status;
                struct priv_site_chain site_chain;
        };
        const uint8_t *data; /* param, detail, body, DER or text */
        size_t data_len;
        const uint8_t *data2; /* the policy signature */
        size_t data2_len;
};

enum priv_side {
        PRIV_SIDE_SCHEDULER, /* receives what the channel sends */
        PRIV_SIDE_CHANNEL,   /* receives what the scheduler sends */
};

/*
 * Checks one received packet for the receiving side: known and allowed
 * type, header length equal to the packet size, fixed part of the exact
 * size, announced tail lengths within limits and adding up exactly, strings
 * NUL-terminated, GUIDs well-formed, cycle and result in range. Returns 0
 * with *ret filled, or -EBADMSG.
 */
int priv_msg_check(enum priv_side side, const uint8_t *buf, size_t len, struct priv_msg *ret);

/* Builders: one packet in a new buffer owned by the caller. */
int priv_build_run(uint32_t cycle, const char *task_guid, const char *param, uint8_t **ret, size_t *ret_len);
int priv_build_done(uint32_t cycle, const char *task_guid, uint32_t return_code, const char *detail,
                    uint8_t **ret, size_t *ret_len);
int priv_build_policy_request(const char *user, uint8_t **ret, size_t *ret_len);
int priv_build_policy(const char *user, uint32_t result, int32_t error, const uint8_t *body, size_t body_len,
                      const uint8_t *sig, size_t sig_len, uint8_t **ret, size_t *ret_len);
int priv_build_site_key(const uint8_t *der, size_t len, uint8_t **ret, size_t *ret_len);
int priv_build_ping(enum priv_type type, uint64_t seq, uint8_t **ret, size_t *ret_len); /* PING or PONG */
int priv_build_status(const char *text, uint8_t **ret, size_t *ret_len);
int priv_build_site_chain(const char *text, size_t len, uint8_t **ret, size_t *ret_len);

/* Sends one packet (blocking for at most the socket's send timeout). */
int priv_send(int fd, const uint8_t *buf, size_t len);

/* Receives one message into buf (PRIV_MSG_MAX bytes) and checks it for
 * side: 1 and *ret filled (pointing into buf), 0 when nothing is there yet,
 * -EPIPE when the peer is gone (or the socket failed), -EBADMSG when the
 * peer sent what side may not accept (*ret_len says how much). */
int priv_recv(int fd, enum priv_side side, uint8_t *buf, struct priv_msg *ret, size_t *ret_len);

/* Makes the SOCK_SEQPACKET pair with buffers big enough for PRIV_MSG_MAX. */
int priv_socketpair(int ret[2]);
