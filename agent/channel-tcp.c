/* SPDX-License-Identifier: Apache-2.0 */
/*
 * One TLS-over-TCP link to the MP (PROTOCOL-v1 section 1), on sd-event:
 * non-blocking connect with a deadline per address, the TLS handshake with
 * its own deadline, then frames both ways: an incremental decoder with the
 * 30 s per-frame deadline, an outgoing queue whose writes must make
 * progress within a deadline, and KEEPALIVE with the "two missed answers"
 * rule. Every failure is reported once to the channel core
 * (channel_tcp_failed), which frees the link.
 */

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "agent/channel-internal.h"
#include "common/cleanup.h"
#include "common/log.h"
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

/* "30 s", or "700 ms" for the shortened deadlines of tests. */
static const char *format_duration(uint64_t usec, char *buf, size_t size) {
        if (usec % 1000000ULL == 0)
                snprintf(buf, size, "%llu s", (unsigned long long)(usec / 1000000ULL));
        else
                snprintf(buf, size, "%llu ms", (unsigned long long)(usec / 1000ULL));
        return buf;
}

static void close_socket(struct tcp_link *link) {
        link->io = sd_event_source_disable_unref(link->io);
        link->tls = tether_tls_conn_free(link->tls);
        if (link->fd >= 0) {
                close(link->fd);
                link->fd = -1;
        }
}

struct tcp_link *tcp_link_free(struct tcp_link *link) {
        if (!link)
                return NULL;
        close_socket(link);
        sd_event_source_disable_unref(link->deadline);
        sd_event_source_disable_unref(link->frame_timer);
        sd_event_source_disable_unref(link->write_timer);
        sd_event_source_disable_unref(link->keepalive_timer);
        sd_event_source_disable_unref(link->more_input);
        sd_event_source_disable_unref(link->fail_later);
        tether_frame_decoder_free(link->decoder);
        while (link->out_head) {
                struct outbuf *b = link->out_head;
                link->out_head = b->next;
                free(b);
        }
        if (link->addrs)
                freeaddrinfo(link->addrs);
        free(link);
        return NULL;
}

/* Reports the failure in link->detail to the channel, which frees the link:
 * the caller returns at once. */
static void link_fail(struct tcp_link *link, int error, bool connect_failure) {
        if (!link->detail[0])
                snprintf(link->detail, sizeof(link->detail), "Connection to %s failed: %s", link->peer,
                         strerror(-error));
        channel_tcp_failed(link->ch, link, error, connect_failure, link->detail);
}

static int arm_timer(struct tcp_link *link, sd_event_source **s, uint64_t usec,
                     sd_event_time_handler_t handler) {
        return channel_arm_timer(link->ch, s, usec, handler, link);
}

static void disarm_timer(sd_event_source *s) {
        if (s)
                (void)sd_event_source_set_enabled(s, SD_EVENT_OFF);
}

/* Which poll events the link needs now. */
static int update_io_events(struct tcp_link *link) {
        uint32_t events = 0;

        if (!link->io)
                return 0;
        switch (link->phase) {
        case TCP_PHASE_CONNECTING:
                events = EPOLLOUT;
                break;
        case TCP_PHASE_HANDSHAKE:
                events = link->read_want == TETHER_TLS_WANT_WRITE ? EPOLLOUT : EPOLLIN;
                break;
        case TCP_PHASE_UP:
                if (!link->session)
                        return sd_event_source_set_enabled(link->io, SD_EVENT_OFF);
                events = EPOLLIN;
                if (link->read_want == TETHER_TLS_WANT_WRITE ||
                    (link->out_head && link->write_want != TETHER_TLS_WANT_READ))
                        events |= EPOLLOUT;
                break;
        }
        int r = sd_event_source_set_io_events(link->io, events);
        if (r < 0)
                return r;
        return sd_event_source_set_enabled(link->io, SD_EVENT_ON);
}

static int build_frame(uint8_t type, enum tether_goodbye_reason reason, uint32_t max_frame, uint8_t **ret,
                       size_t *ret_len) {
        struct tether_msg *msg = NULL;
        int r;

        r = tether_msg_new(type, &msg);
        if (r < 0)
                return r;
        if (type == TETHER_FRAME_KEEPALIVE)
                msg->keepalive.timestamp = time(NULL);
        else
                msg->goodbye = (struct tether_goodbye){.reason = reason};
        /* KEEPALIVE and GOODBYE are unsigned (section 2). */
        r = tether_msg_seal(msg, NULL, max_frame, ret, ret_len);
        tether_msg_free(msg);
        return r;
}

/* Protocol error from the peer: GOODBYE(protocol-error) where it can go out
 * at once, then the failure is reported. */
static void link_protocol_error(struct tcp_link *link) {
        _cleanup_(freep) uint8_t *bye = NULL;
        size_t len = 0;

        if (build_frame(TETHER_FRAME_GOODBYE, TETHER_GOODBYE_PROTOCOL_ERROR, link->ch->max_frame, &bye,
                        &len) >= 0)
                tcp_link_flush_and_close(link, bye, len);
        link_fail(link, -EPROTO, false);
}

/* ---- connecting ---- */

static int on_io(sd_event_source *s, int fd, uint32_t revents, void *userdata);
static int on_deadline(sd_event_source *s, uint64_t usec, void *userdata);
static int start_handshake(struct tcp_link *link);

/* Tries the addresses from next_addr on. Returns 0 when a connect is in
 * flight (or done and the handshake started), or a negative errno with
 * detail set when no address is left. */
static int connect_next(struct tcp_link *link) {
        int r;

        close_socket(link);
        while (link->next_addr) {
                struct addrinfo *ai = link->next_addr;
                link->next_addr = ai->ai_next;

                link->fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
                                  ai->ai_protocol);
                if (link->fd < 0) {
                        link->last_connect_error = -errno;
                        continue;
                }
                /* Frames are small and latency matters more than packet count. */
                int one = 1;
                (void)setsockopt(link->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));

                r = sd_event_add_io(link->ch->event, &link->io, link->fd, EPOLLOUT, on_io, link);
                if (r < 0) {
                        snprintf(link->detail, sizeof(link->detail), "Failed to watch the socket to %s: %s",
                                 link->peer, strerror(-r));
                        return r;
                }
                if (connect(link->fd, ai->ai_addr, ai->ai_addrlen) < 0) {
                        if (errno != EINPROGRESS) {
                                link->last_connect_error = -errno;
                                close_socket(link);
                                continue;
                        }
                        link->phase = TCP_PHASE_CONNECTING;
                        r = arm_timer(link, &link->deadline, link->ch->timing.connect_usec, on_deadline);
                        if (r < 0) {
                                snprintf(link->detail, sizeof(link->detail),
                                         "Failed to arm the connect deadline: %s", strerror(-r));
                                return r;
                        }
                        return update_io_events(link);
                }
                return start_handshake(link);
        }

        r = link->last_connect_error < 0 ? link->last_connect_error : -EHOSTUNREACH;
        snprintf(link->detail, sizeof(link->detail), "Failed to connect to %s: %s", link->peer,
                 strerror(-r));
        return r;
}

static int step_handshake(struct tcp_link *link) {
        enum tether_tls_want want = TETHER_TLS_WANT_NONE;
        int r;

        r = tether_tls_handshake(link->tls, &want);
        if (r < 0) {
                const char *why = tether_tls_conn_error(link->tls);
                snprintf(link->detail, sizeof(link->detail), "TLS handshake with %s failed: %s", link->peer,
                         why && *why ? why : strerror(-r));
                return r;
        }
        if (r == 0) {
                link->read_want = want;
                return update_io_events(link);
        }

        link->phase = TCP_PHASE_UP;
        link->read_want = TETHER_TLS_WANT_NONE;
        disarm_timer(link->deadline);
        r = update_io_events(link);
        if (r < 0)
                return r;
        return 1;
}

static int start_handshake(struct tcp_link *link) {
        int r;

        link->phase = TCP_PHASE_HANDSHAKE;
        r = tether_tls_conn_new(link->ch->tls, link->fd, link->ch->host, &link->tls);
        if (r < 0) {
                snprintf(link->detail, sizeof(link->detail), "Failed to set up TLS to %s: %s", link->peer,
                         strerror(-r));
                return r;
        }
        r = arm_timer(link, &link->deadline, link->ch->timing.handshake_usec, on_deadline);
        if (r < 0) {
                snprintf(link->detail, sizeof(link->detail), "Failed to arm the handshake deadline: %s",
                         strerror(-r));
                return r;
        }
        /* The first handshake step runs from the loop once the socket is
         * writable, so that a link never reports "up" before its creator
         * holds it. */
        link->read_want = TETHER_TLS_WANT_WRITE;
        return update_io_events(link);
}

static int on_deadline(sd_event_source *s, uint64_t usec, void *userdata) {
        struct tcp_link *link = userdata;
        char dur[32];

        if (link->phase == TCP_PHASE_CONNECTING) {
                link->last_connect_error = -ETIMEDOUT;
                int r = connect_next(link);
                if (r < 0)
                        link_fail(link, r, true);
                return 0;
        }
        snprintf(link->detail, sizeof(link->detail), "TLS handshake with %s did not finish within %s",
                 link->peer, format_duration(link->ch->timing.handshake_usec, dur, sizeof(dur)));
        /* A middlebox that swallows the handshake blocks TCP as surely as a
         * refused connect: auto mode may then try HTTPS. */
        link_fail(link, -ETIMEDOUT, true);
        return 0;
}

/* ---- the session: reading ---- */

static int on_frame_deadline(sd_event_source *s, uint64_t usec, void *userdata) {
        struct tcp_link *link = userdata;
        char dur[32];

        snprintf(link->detail, sizeof(link->detail),
                 "Protocol error from %s: a frame did not arrive whole within %s", link->peer,
                 format_duration(link->ch->timing.frame_usec, dur, sizeof(dur)));
        link_protocol_error(link);
        return 0;
}

/* Feeds one chunk to the decoder and delivers every whole frame. Returns 0,
 * 1 when the link was torn down by a callback (do not touch it), or a
 * negative errno with detail set. */
static int feed_chunk(struct tcp_link *link, const uint8_t *data, size_t len) {
        struct tether_channel *ch = link->ch;
        size_t off = 0;
        int r;

        while (off < len) {
                struct tether_frame *frame = NULL;
                struct tether_diag diag = {};
                size_t consumed = 0;

                r = tether_frame_decoder_feed(link->decoder, data + off, len - off, &consumed, &frame,
                                              &diag);
                if (r < 0) {
                        snprintf(link->detail, sizeof(link->detail), "Protocol error from %s: %s",
                                 link->peer, r == -EBADMSG && diag.text[0] ? diag.text : strerror(-r));
                        return r;
                }
                off += consumed;
                if (r == 0)
                        break;

                /* A whole frame: it answers any outstanding KEEPALIVE, and
                 * its deadline is over. */
                disarm_timer(link->frame_timer);
                link->frame_timer_armed = false;
                link->keepalive_unanswered_since = 0;
                if (!channel_deliver_frame(ch, frame))
                        return 1;
        }

        if (tether_frame_decoder_partial(link->decoder) && !link->frame_timer_armed) {
                r = arm_timer(link, &link->frame_timer, ch->timing.frame_usec, on_frame_deadline);
                if (r < 0) {
                        snprintf(link->detail, sizeof(link->detail), "Failed to arm the frame deadline: %s",
                                 strerror(-r));
                        return r;
                }
                link->frame_timer_armed = true;
        }
        return 0;
}

/* Returns 0, 1 when the link is gone, or a negative errno with detail set
 * (-EPROTO for a protocol error). */
static int do_read(struct tcp_link *link) {
        uint8_t buf[READ_CHUNK];
        int r;

        for (unsigned i = 0; i < READ_BUDGET; i++) {
                enum tether_tls_want want = TETHER_TLS_WANT_NONE;
                ssize_t n = tether_tls_read(link->tls, buf, sizeof(buf), &want);

                if (n == -EAGAIN) {
                        link->read_want = want;
                        return 0;
                }
                link->read_want = TETHER_TLS_WANT_NONE;
                if (n == 0) {
                        snprintf(link->detail, sizeof(link->detail), "Connection closed by %s", link->peer);
                        return -ECONNRESET;
                }
                if (n == -ECONNRESET) {
                        /* Closed without close_notify, or reset. */
                        const char *why = tether_tls_conn_error(link->tls);
                        bool has_why = why && *why;
                        snprintf(link->detail, sizeof(link->detail), "Connection closed by %s%s%s%s",
                                 link->peer, has_why ? " (" : "", has_why ? why : "", has_why ? ")" : "");
                        return -ECONNRESET;
                }
                if (n < 0) {
                        const char *why = tether_tls_conn_error(link->tls);
                        snprintf(link->detail, sizeof(link->detail), "Failed to read from %s: %s",
                                 link->peer, why && *why ? why : strerror((int)-n));
                        return (int)n;
                }
                r = feed_chunk(link, buf, (size_t)n);
                if (r < 0)
                        return r == -EBADMSG ? -EPROTO : r;
                if (r > 0)
                        return 1;
        }

        /* Budget spent with input possibly left (in the socket, or inside
         * OpenSSL where poll cannot see it): continue on the next loop
         * iteration. */
        r = sd_event_source_set_enabled(link->more_input, SD_EVENT_ONESHOT);
        if (r < 0) {
                snprintf(link->detail, sizeof(link->detail), "Failed to schedule reading: %s", strerror(-r));
                return r;
        }
        return 0;
}

/* ---- the session: writing ---- */

static int on_write_deadline(sd_event_source *s, uint64_t usec, void *userdata) {
        struct tcp_link *link = userdata;
        char dur[32];

        snprintf(link->detail, sizeof(link->detail), "Writing to %s made no progress for %s", link->peer,
                 format_duration(link->ch->timing.write_usec, dur, sizeof(dur)));
        link_fail(link, -ETIMEDOUT, false);
        return 0;
}

/* Writes as much of the queue as the socket takes. Returns 0 or a negative
 * errno with detail set. */
static int do_write(struct tcp_link *link) {
        int r;

        while (link->out_head) {
                struct outbuf *b = link->out_head;
                enum tether_tls_want want = TETHER_TLS_WANT_NONE;
                /* Retries pass the same pointer and length, as OpenSSL wants. */
                ssize_t n = tether_tls_write(link->tls, b->data + b->off, b->len - b->off, &want);

                if (n == -EAGAIN) {
                        link->write_want = want;
                        return 0;
                }
                if (n < 0) {
                        const char *why = tether_tls_conn_error(link->tls);
                        snprintf(link->detail, sizeof(link->detail), "Failed to write to %s: %s", link->peer,
                                 why && *why ? why : strerror((int)-n));
                        return (int)n;
                }
                link->write_want = TETHER_TLS_WANT_NONE;
                b->off += (size_t)n;
                link->out_bytes -= (size_t)n;
                if (b->off == b->len) {
                        link->out_head = b->next;
                        if (!link->out_head)
                                link->out_tail = &link->out_head;
                        free(b);
                }
                /* Progress: the deadline starts over. */
                if (link->out_head) {
                        r = arm_timer(link, &link->write_timer, link->ch->timing.write_usec,
                                      on_write_deadline);
                        if (r < 0) {
                                snprintf(link->detail, sizeof(link->detail),
                                         "Failed to arm the write deadline: %s", strerror(-r));
                                return r;
                        }
                }
        }
        disarm_timer(link->write_timer);
        link->write_want = TETHER_TLS_WANT_NONE;
        return 0;
}

/* A write inside tcp_link_send failed: the failure is reported from the
 * loop, since the caller of send may still hold the link. */
static int on_fail_later(sd_event_source *s, void *userdata) {
        struct tcp_link *link = userdata;

        link_fail(link, link->send_error, false);
        return 0;
}

static int on_more_input(sd_event_source *s, void *userdata) {
        struct tcp_link *link = userdata;
        int r;

        r = do_read(link);
        if (r > 0)
                return 0;
        if (r < 0) {
                if (r == -EPROTO)
                        link_protocol_error(link);
                else
                        link_fail(link, r, false);
                return 0;
        }
        r = update_io_events(link);
        if (r < 0) {
                snprintf(link->detail, sizeof(link->detail), "Failed to watch %s: %s", link->peer,
                         strerror(-r));
                link_fail(link, r, false);
        }
        return 0;
}

static int on_io(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        struct tcp_link *link = userdata;
        int r;

        switch (link->phase) {
        case TCP_PHASE_CONNECTING: {
                int error = 0;
                socklen_t len = sizeof(error);

                if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &len) < 0)
                        error = errno;
                if (error != 0) {
                        link->last_connect_error = -error;
                        r = connect_next(link);
                } else
                        r = start_handshake(link);
                if (r < 0)
                        link_fail(link, r, true);
                return 0;
        }
        case TCP_PHASE_HANDSHAKE:
                r = step_handshake(link);
                if (r < 0) {
                        /* A failed verification is no reason to try HTTPS:
                         * the same MP key would fail there too. */
                        link_fail(link, r, r != -EPERM);
                        return 0;
                }
                if (r > 0)
                        channel_tcp_up(link->ch, link);
                return 0;
        case TCP_PHASE_UP:
                break;
        }

        if (link->out_head) {
                r = do_write(link);
                if (r < 0) {
                        link_fail(link, r, false);
                        return 0;
                }
        }
        r = do_read(link);
        if (r > 0)
                return 0; /* torn down by a callback */
        if (r < 0) {
                if (r == -EPROTO)
                        link_protocol_error(link);
                else
                        link_fail(link, r, false);
                return 0;
        }
        r = update_io_events(link);
        if (r < 0) {
                snprintf(link->detail, sizeof(link->detail), "Failed to watch %s: %s", link->peer,
                         strerror(-r));
                link_fail(link, r, false);
        }
        return 0;
}

/* ---- keepalive ---- */

static int on_keepalive(sd_event_source *s, uint64_t usec, void *userdata) {
        struct tcp_link *link = userdata;
        uint64_t now = channel_now(link->ch);
        uint64_t interval = (uint64_t)link->keepalive_seconds * 1000000ULL;
        _cleanup_(freep) uint8_t *frame = NULL;
        size_t len = 0;
        int r;

        /* Dead after two missed answers: nothing at all came back within two
         * intervals of the first unanswered KEEPALIVE. */
        if (link->keepalive_unanswered_since != 0 &&
            now - link->keepalive_unanswered_since >= 2 * interval) {
                snprintf(link->detail, sizeof(link->detail),
                         "No answer from %s to two keepalives (%u s apart): connection dead", link->peer,
                         link->keepalive_seconds);
                link_fail(link, -ETIMEDOUT, false);
                return 0;
        }

        r = build_frame(TETHER_FRAME_KEEPALIVE, 0, link->ch->max_frame, &frame, &len);
        if (r >= 0)
                r = tcp_link_send(link, frame, len);
        if (r < 0) {
                snprintf(link->detail, sizeof(link->detail), "Failed to send KEEPALIVE to %s: %s",
                         link->peer, strerror(-r));
                link_fail(link, r, false);
                return 0;
        }
        if (link->keepalive_unanswered_since == 0)
                link->keepalive_unanswered_since = now;

        r = arm_timer(link, &link->keepalive_timer, interval, on_keepalive);
        if (r < 0) {
                snprintf(link->detail, sizeof(link->detail), "Failed to arm the keepalive: %s",
                         strerror(-r));
                link_fail(link, r, false);
        }
        return 0;
}

void tcp_link_set_keepalive(struct tcp_link *link, uint32_t seconds) {
        if (seconds == 0 || seconds == link->keepalive_seconds)
                return;
        link->keepalive_seconds = seconds;
        if (link->session)
                (void)arm_timer(link, &link->keepalive_timer, (uint64_t)seconds * 1000000ULL, on_keepalive);
}

/* ---- public to the channel core ---- */

int tcp_link_new(struct tether_channel *ch, bool probe, char *errbuf, size_t errsize,
                 struct tcp_link **ret) {
        struct tcp_link *link;
        struct addrinfo hints = {
                .ai_family = AF_UNSPEC,
                .ai_socktype = SOCK_STREAM,
                .ai_flags = AI_NUMERICSERV,
        };
        char port[8];
        int r;

        link = calloc(1, sizeof(*link));
        if (!link)
                return -ENOMEM;
        link->ch = ch;
        link->probe = probe;
        link->fd = -1;
        link->out_tail = &link->out_head;
        link->keepalive_seconds = ch->keepalive_seconds;
        channel_peer_name(ch, ch->tcp_port, link->peer, sizeof(link->peer));

        r = tether_frame_decoder_new(ch->max_frame, &link->decoder);
        if (r < 0)
                goto fail_errno;
        r = sd_event_add_defer(ch->event, &link->more_input, on_more_input, link);
        if (r < 0)
                goto fail_errno;
        r = sd_event_source_set_enabled(link->more_input, SD_EVENT_OFF);
        if (r < 0)
                goto fail_errno;
        r = sd_event_add_defer(ch->event, &link->fail_later, on_fail_later, link);
        if (r < 0)
                goto fail_errno;
        r = sd_event_source_set_enabled(link->fail_later, SD_EVENT_OFF);
        if (r < 0)
                goto fail_errno;

        /* getaddrinfo() blocks the loop while it resolves. That is immediate
         * for address literals and "localhost", which is what most sites
         * configure for an MP; a name served by a slow DNS stalls the
         * channel process for the resolver's time-out (there is no sd-resolve
         * in the installed libsystemd). */
        snprintf(port, sizeof(port), "%u", (unsigned)ch->tcp_port);
        r = getaddrinfo(ch->host, port, &hints, &link->addrs);
        if (r != 0) {
                snprintf(errbuf, errsize, "Failed to resolve '%s': %s", ch->host,
                         r == EAI_SYSTEM ? strerror(errno) : gai_strerror(r));
                link->addrs = NULL;
                tcp_link_free(link);
                return r == EAI_MEMORY ? -ENOMEM : -EHOSTUNREACH;
        }
        link->next_addr = link->addrs;

        r = connect_next(link);
        if (r < 0) {
                snprintf(errbuf, errsize, "%s", link->detail);
                tcp_link_free(link);
                return r;
        }
        *ret = link;
        return 0;

fail_errno:
        snprintf(errbuf, errsize, "Failed to set up the connection to %s: %s", link->peer, strerror(-r));
        tcp_link_free(link);
        return r;
}

int tcp_link_start_session(struct tcp_link *link) {
        int r;

        link->session = true;
        link->keepalive_unanswered_since = 0;
        if (link->keepalive_seconds > 0) {
                r = arm_timer(link, &link->keepalive_timer, (uint64_t)link->keepalive_seconds * 1000000ULL,
                              on_keepalive);
                if (r < 0)
                        return r;
        }
        r = update_io_events(link);
        if (r < 0)
                return r;
        /* OpenSSL may already hold application data that arrived with the
         * end of the handshake: poll would not report it. */
        if (tether_tls_pending(link->tls))
                return sd_event_source_set_enabled(link->more_input, SD_EVENT_ONESHOT);
        return 0;
}

int tcp_link_send(struct tcp_link *link, const uint8_t *frame, size_t len) {
        struct outbuf *b;
        bool was_empty = !link->out_head;
        int r;

        if (len == 0)
                return -EINVAL;
        if (link->send_error < 0)
                return link->send_error;
        if (link->out_bytes + len > OUTQ_MAX_BYTES)
                return -ENOBUFS;
        b = malloc(sizeof(*b) + len);
        if (!b)
                return -ENOMEM;
        b->next = NULL;
        b->len = len;
        b->off = 0;
        memcpy(b->data, frame, len);
        *link->out_tail = b;
        link->out_tail = &b->next;
        link->out_bytes += len;

        /* With nothing queued before, write at once: a frame must not wait
         * for another loop iteration (PUSH_ACK, RESPONSE, KEEPALIVE). A
         * failure is only recorded here and reported from the loop, so that
         * send stays safe to call from inside any callback. */
        if (was_empty && link->phase == TCP_PHASE_UP && link->tls) {
                r = do_write(link);
                if (r < 0) {
                        link->send_error = r;
                        r = sd_event_source_set_enabled(link->fail_later, SD_EVENT_ONESHOT);
                        return r < 0 ? r : 0;
                }
        }
        if (was_empty && link->out_head) {
                /* Something is left for the loop: the write deadline starts now. */
                r = arm_timer(link, &link->write_timer, link->ch->timing.write_usec, on_write_deadline);
                if (r < 0)
                        return r;
        }
        /* Whatever is left goes out from the loop (EPOLLOUT). */
        return update_io_events(link);
}

void tcp_link_flush_and_close(struct tcp_link *link, const uint8_t *frame, size_t len) {
        if (!link->tls || link->phase != TCP_PHASE_UP)
                return;
        if (frame && len > 0 && tcp_link_send(link, frame, len) < 0)
                return;
        /* One non-blocking pass: best effort, never waits. */
        (void)do_write(link);
        tether_tls_shutdown(link->tls);
}
