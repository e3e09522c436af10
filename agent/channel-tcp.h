/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/* Private to channel-tcp.c (connecting, keepalive, the link's operations)
 * and channel-tcp-io.c (the session's reading and writing). */

#include <netdb.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <systemd/sd-event.h>

#include "agent/channel-internal.h"
#include "transport/frame.h"
#include "transport/message.h"
#include "transport/tls.h"

/* A flood of frames must not starve the rest of the loop: after this many
 * reads in one dispatch the link yields and continues from a defer source. */
#define READ_BUDGET 64
#define READ_CHUNK 16384
/* Frames queued but not yet written, beyond which send refuses (-ENOBUFS):
 * a peer that never reads must not make the agent grow without bound. */
#define OUTQ_MAX_BYTES (32u * 1024u * 1024u)

enum tcp_phase {
        TCP_PHASE_CONNECTING,
        TCP_PHASE_HANDSHAKE,
        TCP_PHASE_UP,
};

struct outbuf {
        struct outbuf *next;
        size_t len;
        size_t off;
        uint8_t data[];
};

struct tcp_link {
        struct tether_channel *ch;
        bool probe;
        enum tcp_phase phase;
        bool session;

        char peer[300]; /* host:port for logs */
        struct addrinfo *addrs;
        struct addrinfo *next_addr;
        int last_connect_error;

        int fd;
        struct tether_tls_conn *tls;
        sd_event_source *io;
        sd_event_source *deadline;    /* connect or handshake */
        sd_event_source *frame_timer; /* started at a frame's first byte */
        sd_event_source *write_timer; /* re-armed at every write progress */
        sd_event_source *keepalive_timer;
        sd_event_source *more_input; /* continues reading after READ_BUDGET */
        sd_event_source *fail_later; /* reports a write failure met inside send */
        int send_error;              /* that failure, with detail set */

        struct tether_frame_decoder *decoder;
        bool frame_timer_armed;

        struct outbuf *out_head;
        struct outbuf **out_tail;
        size_t out_bytes;

        enum tether_tls_want read_want;
        enum tether_tls_want write_want;

        uint32_t keepalive_seconds;
        uint64_t keepalive_unanswered_since; /* 0: every KEEPALIVE answered */

        char detail[1024]; /* the text of the failure being reported */
};

const char *format_duration(uint64_t usec, char *buf, size_t size);
void link_fail(struct tcp_link *link, int error, bool connect_failure);
int arm_timer(struct tcp_link *link, sd_event_source **s, uint64_t usec, sd_event_time_handler_t handler);
void disarm_timer(sd_event_source *s);
int update_io_events(struct tcp_link *link);
void link_protocol_error(struct tcp_link *link);
int connect_next(struct tcp_link *link);
int step_handshake(struct tcp_link *link);
int start_handshake(struct tcp_link *link);
int on_write_deadline(sd_event_source *s, uint64_t usec, void *userdata);
int do_write(struct tcp_link *link);
int on_fail_later(sd_event_source *s, void *userdata);
int on_more_input(sd_event_source *s, void *userdata);
int on_io(sd_event_source *s, int fd, uint32_t revents, void *userdata);
