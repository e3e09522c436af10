/* SPDX-License-Identifier: Apache-2.0 */
/*
 * libFuzzer target: the MP's HTTP input (mp/http.c), on a real in-process
 * server, fed in chunk sizes the input chooses. The first byte picks the
 * listener (bit 0: HTTPS, else the admin socket) and how many size bytes
 * follow (bits 1..4); each size byte s gives a chunk of s + 1 bytes, round
 * robin; the rest is the stream. The connection is a socketpair whose far
 * end the target reads and throws away, and the event loop runs between
 * chunks, so the deferred parsing rounds, the caps on backlog and output,
 * and pipelining are exercised as on a socket.
 */
#include <errno.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/log.h"
#include "mp/mp.h"
#include "transport/sign.h"
#include "transport/tls.h"

static struct mp_config cfg;
static struct mp_server *srv;
static char *peer_spki; /* a client certificate's key, as the handshake would give */

static char dir[] = "/tmp/fuzz-mp-http-XXXXXX";

/* libFuzzer ends with exit(): the state directory goes with it. */
static void cleanup(void) {
        char cmd[128];

        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
        if (system(cmd) != 0)
                fprintf(stderr, "fuzz-mp-http: could not remove %s\n", dir);
}

static void setup(void) {
        char path[256];

        if (!mkdtemp(dir))
                abort();
        atexit(cleanup);
        log_set_max_level(LOG_EMERG); /* bad input is logged: keep quiet */
        mp_config_init(&cfg);
        snprintf(path, sizeof(path), "%s/admin.sock", dir);
        if (mp_config_set(&cfg, "StateDirectory", dir) < 0 ||
            mp_config_set(&cfg, "Listen", "127.0.0.1:0") < 0 ||
            mp_config_set(&cfg, "HTTPSListen", "off") < 0 || mp_config_set(&cfg, "AdminSocket", path) < 0)
                abort();
        snprintf(path, sizeof(path), "%s/policies", dir);
        if (mp_config_set(&cfg, "PolicyDirectory", path) < 0)
                abort();
        if (mp_server_new(&cfg, &srv) < 0)
                abort();
        struct tether_key *k = NULL;
        if (tether_key_generate(TETHER_KEY_EC_P256, &k) < 0 || tether_key_spki_base64(k, &peer_spki) < 0)
                abort();
        tether_key_free(k);
}

static void drain_peer(int fd) {
        char buf[65536];

        while (read(fd, buf, sizeof(buf)) > 0)
                ;
}

/* Runs what is ready (deferred rounds, the flush) without waiting. */
static void run_loop(int peer) {
        for (unsigned i = 0; i < 64; i++) {
                drain_peer(peer);
                if (sd_event_run(srv->event, 0) <= 0)
                        break;
        }
        drain_peer(peer);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        const uint8_t *sizes;
        size_t n_sizes, i = 0;
        struct mp_conn *c = NULL;
        int sv[2];

        if (!srv)
                setup();
        if (size < 1)
                return 0;
        n_sizes = 1 + ((data[0] >> 1) & 0xf);
        if (size < 1 + n_sizes)
                return 0;
        sizes = data + 1;
        enum mp_conn_kind kind = data[0] & 1 ? MP_CONN_HTTPS : MP_CONN_ADMIN;
        data += 1 + n_sizes;
        size -= 1 + n_sizes;

        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) < 0)
                abort();
        if (mp_conn_new(srv, kind, sv[0], NULL, 0, &c) < 0)
                abort();
        mp_conn_ref(c);
        if (kind == MP_CONN_HTTPS) {
                /* Past the handshake, in the clear: the HTTP layer is the
                 * target here, not OpenSSL. */
                c->tls = tether_tls_conn_free(c->tls);
                c->handshake_done = true;
                if (tether_key_from_spki_base64(peer_spki, &c->peer_key) < 0)
                        abort();
        }
        for (size_t off = 0; off < size && !c->dead;) {
                size_t chunk = (size_t)sizes[i++ % n_sizes] + 1;

                if (chunk > size - off)
                        chunk = size - off;
                if (write(sv[1], data + off, chunk) != (ssize_t)chunk)
                        break;
                off += chunk;
                /* the socket turned readable: what epoll would report */
                run_loop(sv[1]);
        }
        run_loop(sv[1]);
        if (!c->dead)
                mp_conn_close(c, NULL);
        mp_conn_unref(c);
        close(sv[1]);
        run_loop(-1);
        return 0;
}
