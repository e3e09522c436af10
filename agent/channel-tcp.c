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
#include "agent/channel-tcp.h"
#include "common/cleanup.h"
#include "common/log.h"
#include "transport/frame.h"
#include "transport/message.h"
#include "transport/tls.h"

/* "30 s", or "700 ms" for the shortened deadlines of tests. */
const char *format_duration(uint64_t usec, char *buf, size_t size) {
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
void link_fail(struct tcp_link *link, int error, bool connect_failure) {
        if (!link->detail[0])
                snprintf(link->detail, sizeof(link->detail), "Connection to %s failed: %s", link->peer,
                         strerror(-error));
        channel_tcp_failed(link->ch, link, error, connect_failure, link->detail);
}

int arm_timer(struct tcp_link *link, sd_event_source **s, uint64_t usec, sd_event_time_handler_t handler) {
        return channel_arm_timer(link->ch, s, usec, handler, link);
}

void disarm_timer(sd_event_source *s) {
        if (s)
                (void)sd_event_source_set_enabled(s, SD_EVENT_OFF);
}

/* Which poll events the link needs now. */
int update_io_events(struct tcp_link *link) {
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
void link_protocol_error(struct tcp_link *link) {
        _cleanup_(freep) uint8_t *bye = NULL;
        size_t len = 0;

        if (build_frame(TETHER_FRAME_GOODBYE, TETHER_GOODBYE_PROTOCOL_ERROR, link->ch->max_frame, &bye,
                        &len) >= 0)
                tcp_link_flush_and_close(link, bye, len);
        link_fail(link, -EPROTO, false);
}

/* ---- connecting ---- */

static int on_deadline(sd_event_source *s, uint64_t usec, void *userdata);

/* Tries the addresses from next_addr on. Returns 0 when a connect is in
 * flight (or done and the handshake started), or a negative errno with
 * detail set when no address is left. */
int connect_next(struct tcp_link *link) {
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

int step_handshake(struct tcp_link *link) {
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

int start_handshake(struct tcp_link *link) {
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

/* ---- the link's operations (channel-internal.h) ---- */

static uint16_t tcp_begin(struct tether_channel *ch) {
        return ch->tcp_port;
}

static int tcp_start(struct tether_channel *ch, const char *peer, char *err, size_t errsize,
                     bool *connect_failure) {
        int r = tcp_link_new(ch, false, err, errsize, &ch->tcp);

        if (r < 0) {
                ch->tcp = NULL;
                if (!err[0])
                        snprintf(err, errsize, "Failed to connect to %s: %s", peer, strerror(-r));
                *connect_failure = r != -ENOMEM;
        }
        return r;
}

static int tcp_send(struct tether_channel *ch, const uint8_t *frame, size_t len) {
        return ch->tcp ? tcp_link_send(ch->tcp, frame, len) : -ENOTCONN;
}

static void tcp_stop(struct tether_channel *ch, bool planned) {
        if (planned && ch->tcp) {
                _cleanup_(freep) uint8_t *frame = NULL;
                size_t len = 0;

                /* The last words of a planned stop (over HTTPS there are
                 * none: the MP sees the polls stop). */
                if (build_frame(TETHER_FRAME_GOODBYE, TETHER_GOODBYE_SHUTDOWN, ch->max_frame, &frame,
                                &len) >= 0)
                        tcp_link_flush_and_close(ch->tcp, frame, len);
        }
        ch->tcp = tcp_link_free(ch->tcp);
        ch->probe = tcp_link_free(ch->probe);
}

/* Auto mode: a TCP connection that could not be made falls back to HTTPS,
 * once an attempt. */
static bool tcp_fail_over(struct tether_channel *ch, bool connect_failure, const char *detail) {
        if (ch->mode != TETHER_CHANNEL_AUTO || !connect_failure || ch->https_tried)
                return false;
        log_warning("%s; trying the HTTPS fallback", detail);
        channel_start_link(ch, &https_link_ops);
        return true;
}

const struct link_ops tcp_link_ops = {
        .name = "tcp",
        .begin = tcp_begin,
        .start = tcp_start,
        .send = tcp_send,
        .stop = tcp_stop,
        .fail_over = tcp_fail_over,
};
