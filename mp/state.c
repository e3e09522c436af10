/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The state directory: site.key/site.pub (the signing key agents pin),
 * tls.key/tls.crt (the listeners' certificate), created at first start;
 * site-chain and site-<serial>.key once the site key has been rotated.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/fsutil.h"
#include "common/log.h"
#include "mp/mp.h"
#include "transport/rotation.h"
#include "transport/sign.h"

DEFINE_TRIVIAL_CLEANUP_FUNC(struct tether_key *, tether_key_free)
DEFINE_TRIVIAL_CLEANUP_FUNC(struct tether_site_chain *, tether_site_chain_free)

static int read_text(const char *path, char **ret) {
        _cleanup_(fclosep) FILE *f = fopen(path, "re");
        char *buf = NULL;
        size_t len = 0;

        if (!f)
                return -errno;
        FILE *m = open_memstream(&buf, &len);
        if (!m)
                return -ENOMEM;
        char chunk[4096];
        size_t n;
        while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0)
                fwrite(chunk, 1, n, m);
        fclose(m);
        *ret = buf;
        return 0;
}

static int load_or_create_key(const char *dir, const char *name, bool create, const char *pub_name,
                              struct tether_key **ret) {
        char path[4096];
        _cleanup_(tether_key_freep) struct tether_key *key = NULL;
        int r;

        snprintf(path, sizeof(path), "%s/%s", dir, name);
        r = tether_key_load_private(path, &key);
        if (r == -ENOENT && create) {
                r = tether_key_generate(TETHER_KEY_EC_P256, &key);
                if (r < 0)
                        return log_error_errno(r, "Failed to generate %s: %m", path);
                r = tether_key_save_private(key, path);
                if (r < 0)
                        return log_error_errno(r, "Failed to write %s: %m", path);
                log_info("Generated %s", path);
        } else if (r < 0) {
                return log_error_errno(r, "Failed to load %s: %m", path);
        }
        if (pub_name) {
                snprintf(path, sizeof(path), "%s/%s", dir, pub_name);
                if (access(path, F_OK) < 0) {
                        r = tether_key_save_public(key, path);
                        if (r < 0)
                                return log_error_errno(r, "Failed to write %s: %m", path);
                }
        }
        *ret = TAKE_PTR(key);
        return 0;
}

int mp_state_load(const struct mp_config *cfg, bool create, struct tether_key **ret_site_key,
                  struct tether_key **ret_tls_key, char **ret_tls_cert_pem) {
        _cleanup_(tether_key_freep) struct tether_key *site = NULL, *tls = NULL;
        _cleanup_(freep) char *cert = NULL;
        char path[4096];
        int r;

        if (create && mkdir(cfg->state_dir, 0700) < 0 && errno != EEXIST)
                return log_error_errno(-errno, "Failed to create %s: %m", cfg->state_dir);

        r = load_or_create_key(cfg->state_dir, "site.key", create, "site.pub", &site);
        if (r < 0)
                return r;
        if (ret_tls_key || ret_tls_cert_pem) {
                r = load_or_create_key(cfg->state_dir, "tls.key", create, NULL, &tls);
                if (r < 0)
                        return r;
                snprintf(path, sizeof(path), "%s/tls.crt", cfg->state_dir);
                r = read_text(path, &cert);
                if (r == -ENOENT && create) {
                        const char *names[MP_MAX_TLS_NAMES + 5];
                        char host[256] = "";
                        unsigned n = 0;

                        if (cfg->n_tls_names > 0) {
                                for (unsigned i = 0; i < cfg->n_tls_names; i++)
                                        names[n++] = cfg->tls_names[i];
                        } else {
                                names[n++] = "localhost";
                                names[n++] = "127.0.0.1";
                                names[n++] = "::1";
                                if (gethostname(host, sizeof(host) - 1) == 0 && host[0] &&
                                    strcmp(host, "localhost") != 0)
                                        names[n++] = host;
                        }
                        names[n] = NULL;
                        r = tether_cert_self_signed(tls, names[0], names, 3650, &cert);
                        if (r < 0)
                                return log_error_errno(r, "Failed to create the TLS certificate: %m");
                        r = write_file_atomic(path, cert, strlen(cert), 0644, FSUTIL_DURABLE);
                        if (r < 0)
                                return log_error_errno(r, "Failed to write %s: %m", path);
                        log_info("Generated %s (self-signed, CN=%s)", path, names[0]);
                } else if (r < 0) {
                        return log_error_errno(r, "Failed to read %s: %m", path);
                }
        }
        *ret_site_key = TAKE_PTR(site);
        if (ret_tls_key)
                *ret_tls_key = TAKE_PTR(tls);
        if (ret_tls_cert_pem)
                *ret_tls_cert_pem = TAKE_PTR(cert);
        return 0;
}

/* ---- site key rotation (PROTOCOL-v1 7.2) ---- */

static int chain_path(const struct mp_server *srv, char *buf, size_t size) {
        int n = snprintf(buf, size, "%s/site-chain", srv->cfg->state_dir);
        return n < 0 || (size_t)n >= size ? -ENAMETOOLONG : 0;
}

static int link_key_path(const struct mp_server *srv, size_t serial, char *buf, size_t size) {
        int n = snprintf(buf, size, "%s/site-%zu.key", srv->cfg->state_dir, serial);
        return n < 0 || (size_t)n >= size ? -ENAMETOOLONG : 0;
}

void mp_site_chain_free(struct mp_server *srv) {
        srv->site_key_timer = sd_event_source_disable_unref(srv->site_key_timer);
        if (srv->site_privs && srv->site_chain)
                for (size_t i = 1; i < tether_site_chain_len(srv->site_chain); i++)
                        tether_key_free(srv->site_privs[i]);
        free(srv->site_privs);
        srv->site_privs = NULL;
        srv->site_chain = tether_site_chain_free(srv->site_chain);
}

/* The private key of every link, each checked against the endorsed key. */
static int load_link_keys(struct mp_server *srv, struct tether_site_chain *chain, struct tether_key ***ret) {
        size_t n = tether_site_chain_len(chain);
        struct tether_key **privs = calloc(n, sizeof(*privs));
        char path[4096];
        int r = 0;

        if (!privs)
                return -ENOMEM;
        privs[0] = srv->site_key;
        for (size_t i = 1; i < n && r >= 0; i++) {
                r = link_key_path(srv, i + 1, path, sizeof(path));
                if (r >= 0)
                        r = tether_key_load_private(path, &privs[i]);
                if (r < 0)
                        log_error_errno(r, "Failed to load %s, the private key of site key serial %zu: %m",
                                        path, i + 1);
                else if (!tether_key_equal(privs[i], tether_site_chain_key(chain, i))) {
                        log_error("%s is not the key that site-chain endorses as serial %zu", path, i + 1);
                        r = -EKEYREJECTED;
                }
        }
        if (r < 0) {
                for (size_t i = 1; i < n; i++)
                        tether_key_free(privs[i]);
                free(privs);
                return r;
        }
        *ret = privs;
        return 0;
}

static int site_key_due(sd_event_source *src, uint64_t usec, void *userdata) {
        struct mp_server *srv = userdata;

        for (size_t i = 0; i < ELEMENTSOF(srv->confirm_cache); i++) {
                mp_buf_unref(srv->confirm_cache[i]);
                srv->confirm_cache[i] = NULL;
        }
        log_notice("Site key serial %" PRIu32 " signs pushes, confirms and policies from now on",
                   mp_site_serial(srv));
        mp_site_key_broadcast(srv);
        return 0;
}

/* A timer at the newest key's NotBefore, when it is still ahead: then the
 * agents get a confirm signed by it at once. */
static int arm_site_key_timer(struct mp_server *srv) {
        size_t n = tether_site_chain_len(srv->site_chain);
        time_t nb = tether_site_chain_not_before(srv->site_chain, n - 1);

        srv->site_key_timer = sd_event_source_disable_unref(srv->site_key_timer);
        if (n < 2 || nb <= time(NULL) || !srv->event)
                return 0;
        return sd_event_add_time(srv->event, &srv->site_key_timer, CLOCK_REALTIME, (uint64_t)nb * 1000000ULL,
                                 100000, site_key_due, srv);
}

int mp_site_chain_load(struct mp_server *srv) {
        _cleanup_(tether_site_chain_freep) struct tether_site_chain *chain = NULL;
        char path[4096], why[256] = "";
        int r;

        r = tether_site_chain_new(srv->site_key, &chain);
        if (r >= 0)
                r = chain_path(srv, path, sizeof(path));
        if (r < 0)
                return r;
        /* The MP checks its own chain as an agent would: a file that does
         * not verify from site.key is refused, not trusted. */
        r = tether_site_chain_load(chain, path, time(NULL), why);
        if (r < 0 && r != -ENOENT)
                return log_error_errno(r, "Failed to load the site key chain %s: %s", path,
                                       why[0] ? why : strerror(-r));
        r = load_link_keys(srv, chain, &srv->site_privs);
        if (r < 0)
                return r;
        srv->site_chain = TAKE_PTR(chain);
        r = arm_site_key_timer(srv);
        if (r < 0)
                return log_error_errno(r, "Failed to arm the timer at the new key's NotBefore: %m");
        if (tether_site_chain_len(srv->site_chain) > 1)
                log_info("Site key chain: %zu keys; serial %" PRIu32 " signs now",
                         tether_site_chain_len(srv->site_chain), mp_site_serial(srv));
        return 0;
}

const struct tether_key *mp_site_signer(struct mp_server *srv) {
        if (!srv->site_chain)
                return srv->site_key;
        return srv->site_privs[tether_site_chain_current(srv->site_chain, time(NULL))];
}

uint32_t mp_site_serial(struct mp_server *srv) {
        if (!srv->site_chain)
                return 1;
        return (uint32_t)tether_site_chain_current(srv->site_chain, time(NULL)) + 1;
}

int mp_site_key_rotate(struct mp_server *srv, time_t not_before, char err[256]) {
        _cleanup_(tether_site_chain_freep) struct tether_site_chain *next = NULL;
        _cleanup_(tether_key_freep) struct tether_key *key = NULL;
        struct tether_key **privs;
        size_t n = tether_site_chain_len(srv->site_chain);
        char path[4096];
        int r;

        if (not_before > time(NULL) + TETHER_NOT_BEFORE_MAX_AHEAD) {
                snprintf(err, 256, "NotBefore is more than %d days ahead: agents would refuse it",
                         TETHER_NOT_BEFORE_MAX_AHEAD / 86400);
                return -EINVAL;
        }
        if (not_before < tether_site_chain_not_before(srv->site_chain, n - 1)) {
                snprintf(err, 256, "NotBefore is before the newest key's");
                return -EINVAL;
        }
        r = tether_key_generate(TETHER_KEY_EC_P256, &key);
        if (r >= 0)
                r = tether_site_chain_copy(srv->site_chain, &next);
        if (r >= 0)
                r = tether_site_chain_append(next, srv->site_privs[n - 1], key, not_before);
        if (r < 0) {
                snprintf(err, 256, "cannot make the next site key: %s", strerror(-r));
                return r;
        }
        /* The key file first: a chain never names a key the node lacks. */
        r = link_key_path(srv, n + 1, path, sizeof(path));
        if (r >= 0)
                r = tether_key_save_private(key, path);
        if (r < 0) {
                snprintf(err, 256, "cannot write %.180s: %s", path, strerror(-r));
                return r;
        }
        r = chain_path(srv, path, sizeof(path));
        if (r >= 0)
                r = tether_site_chain_save(next, path);
        if (r < 0) {
                snprintf(err, 256, "cannot write %.180s: %s", path, strerror(-r));
                return r;
        }
        privs = realloc(srv->site_privs, (n + 1) * sizeof(*privs));
        if (!privs)
                return -ENOMEM;
        privs[n] = TAKE_PTR(key);
        srv->site_privs = privs;
        tether_site_chain_free(srv->site_chain);
        srv->site_chain = TAKE_PTR(next);
        /* Confirms signed before are stale: they lack the new link. */
        for (size_t i = 0; i < ELEMENTSOF(srv->confirm_cache); i++) {
                mp_buf_unref(srv->confirm_cache[i]);
                srv->confirm_cache[i] = NULL;
        }
        r = arm_site_key_timer(srv);
        if (r < 0)
                log_warning_errno(r, "Failed to arm the timer at the new key's NotBefore, ignoring: %m");
        mp_site_key_broadcast(srv);
        return 0;
}
