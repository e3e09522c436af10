/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The state directory: site.key/site.pub (the signing key agents pin),
 * tls.key/tls.crt (the listeners' certificate), created at first start.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/fsutil.h"
#include "common/log.h"
#include "mp/mp.h"
#include "transport/sign.h"

DEFINE_TRIVIAL_CLEANUP_FUNC(struct tether_key *, tether_key_free)

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
