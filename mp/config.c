/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tether-mp's configuration: built-in defaults, then the INI file (inih),
 * then the command line. Keys live in the [MP] section (see
 * conf/tether-mp.conf); each maps to one parser in the table below.
 */
#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <fcntl.h>
#include <ini.h>

#include "common/cleanup.h"
#include "common/fsutil.h"
#include "common/log.h"
#include "common/strutil.h"
#include "mp/mp.h"

void mp_config_init(struct mp_config *c) {
        memset(c, 0, sizeof(*c));
        c->approval = MP_APPROVAL_AUTO;
        c->keepalive = 180;
        c->push_rate = 1000;
        c->push_batch = 200;
        c->push_expires = 3600;
        c->max_frame = 1024 * 1024;
        c->shutdown_reconnect_rate = 200;
        c->max_signin = 64 * 1024;
        c->request_timeout = 30;
        c->max_conns = 20000;
        c->max_unauth = 4096;
        c->max_unauth_per_addr = 1024;
        c->overload_retry_after = 60;
        c->max_body_total = 128u * 1024u * 1024u;
        c->devsync_interval_min = 15;
        c->devsync_batch = 500;
}

void mp_config_done(struct mp_config *c) {
        free(c->state_dir);
        free(c->store);
        free(c->node_id);
        free(c->listen);
        free(c->https_listen);
        free(c->console_listen);
        free(c->console_webroot);
        free(c->admin_socket);
        free(c->admin_group);
        free(c->token);
        free(c->policy_dir);
        free(c->devsync_url);
        free(c->devsync_ca_file);
        for (unsigned i = 0; i < c->n_tls_names; i++)
                free(c->tls_names[i]);
        memset(c, 0, sizeof(*c));
}

typedef int (*config_parser)(struct mp_config *c, const char *value, size_t offset, uint64_t min,
                             uint64_t max);

static int parse_string(struct mp_config *c, const char *value, size_t offset, uint64_t min, uint64_t max) {
        char **field = (char **)((uint8_t *)c + offset);
        char *copy = strdup(value);

        (void)min;
        (void)max;
        if (!copy)
                return -ENOMEM;
        free(*field);
        *field = copy;
        return 0;
}

/* A secret kept out of the INI file (which a DynamicUser= service may not be
 * able to read once it is 0600): the file's content up to the first line
 * end. An empty file means no token. */
static int read_token_file(const char *path, char **ret) {
        _cleanup_(freep) uint8_t *data = NULL;
        size_t len = 0;
        int r;

        r = read_file_at(AT_FDCWD, path, 4096, &data, &len);
        if (r < 0)
                return log_error_errno(r, "Failed to read the enrolment token from %s: %m", path);
        data[strcspn((char *)data, "\r\n")] = 0;
        free(*ret);
        *ret = strdup((char *)data);
        return *ret ? 0 : -ENOMEM;
}

static int parse_token_file(struct mp_config *c, const char *value, size_t offset, uint64_t min,
                            uint64_t max) {
        (void)offset;
        (void)min;
        (void)max;
        return read_token_file(value, &c->token);
}

static int parse_uint(struct mp_config *c, const char *value, size_t offset, uint64_t min, uint64_t max) {
        uint32_t *field = (uint32_t *)((uint8_t *)c + offset);
        uint64_t v;
        int r;

        r = parse_u64(value, min, max, &v);
        if (r < 0)
                return r;
        *field = (uint32_t)v;
        return 0;
}

#define LIST_SEPARATORS " ,\t"

/* HTTPSListen: "off", "", or up to MP_MAX_HTTPS_LISTEN "ADDR:PORT" items
 * separated by spaces or commas (e.g. "0.0.0.0:10124 0.0.0.0:443"). Each
 * item's shape is checked here, so that --check catches a typo; binding
 * happens in server.c. Stored with single spaces between items. */
static int parse_listen_list(struct mp_config *c, const char *value, size_t offset, uint64_t min,
                             uint64_t max) {
        char **field = (char **)((uint8_t *)c + offset);
        _cleanup_(freep) char *norm = malloc(strlen(value) + 1);
        size_t out = 0, n_items = 0;

        (void)min;
        (void)max;
        if (!norm)
                return -ENOMEM;
        for (const char *p = value + strspn(value, LIST_SEPARATORS); *p; p += strspn(p, LIST_SEPARATORS)) {
                size_t item = strcspn(p, LIST_SEPARATORS);
                const char *colon = memrchr(p, ':', item);
                uint64_t port;

                if (item == 3 && strncmp(p, "off", 3) == 0 && n_items == 0 &&
                    p[3 + strspn(p + 3, LIST_SEPARATORS)] == '\0') {
                        out = (size_t)snprintf(norm, 4, "off");
                        break;
                }
                if (!colon || parse_u64_n(colon + 1, item - (size_t)(colon + 1 - p), 0, 65535, &port) < 0 ||
                    ++n_items > MP_MAX_HTTPS_LISTEN)
                        return -EINVAL;
                if (out > 0)
                        norm[out++] = ' ';
                memcpy(norm + out, p, item);
                out += item;
                p += item;
        }
        norm[out] = '\0';
        free(*field);
        *field = TAKE_PTR(norm);
        return 0;
}

static int parse_approval(struct mp_config *c, const char *value, size_t offset, uint64_t min,
                          uint64_t max) {
        (void)offset;
        (void)min;
        (void)max;
        return mp_approval_mode_from_string(value, &c->approval);
}

static int parse_tls_name(struct mp_config *c, const char *value, size_t offset, uint64_t min,
                          uint64_t max) {
        (void)offset;
        (void)min;
        (void)max;
        if (c->n_tls_names >= MP_MAX_TLS_NAMES)
                return -E2BIG;
        c->tls_names[c->n_tls_names] = strdup(value);
        if (!c->tls_names[c->n_tls_names])
                return -ENOMEM;
        c->n_tls_names++;
        return 0;
}

static int parse_bool(struct mp_config *c, const char *value, size_t offset, uint64_t min, uint64_t max) {
        bool *field = (bool *)((uint8_t *)c + offset);

        (void)min;
        (void)max;
        if (!strcmp(value, "yes") || !strcmp(value, "true") || !strcmp(value, "1") || !strcmp(value, "on"))
                *field = true;
        else if (!strcmp(value, "no") || !strcmp(value, "false") || !strcmp(value, "0") ||
                 !strcmp(value, "off"))
                *field = false;
        else
                return -EINVAL;
        return 0;
}

static const struct config_key {
        const char *name;
        config_parser parse;
        size_t offset;
        uint64_t min, max;
} config_keys[] = {
        {"StateDirectory", parse_string, offsetof(struct mp_config, state_dir), 0, 0},
        {"Store", parse_string, offsetof(struct mp_config, store), 0, 0},
        {"NodeID", parse_string, offsetof(struct mp_config, node_id), 0, 0},
        {"Listen", parse_string, offsetof(struct mp_config, listen), 0, 0},
        {"HTTPSListen", parse_listen_list, offsetof(struct mp_config, https_listen), 0, 0},
        {"ConsoleListen", parse_string, offsetof(struct mp_config, console_listen), 0, 0},
        {"ConsoleWebRoot", parse_string, offsetof(struct mp_config, console_webroot), 0, 0},
        {"AdminSocket", parse_string, offsetof(struct mp_config, admin_socket), 0, 0},
        {"AdminSocketGroup", parse_string, offsetof(struct mp_config, admin_group), 0, 0},
        {"Approval", parse_approval, 0, 0, 0},
        {"EnrolmentToken", parse_string, offsetof(struct mp_config, token), 0, 0},
        {"EnrolmentTokenFile", parse_token_file, 0, 0, 0},
        {"PolicyDirectory", parse_string, offsetof(struct mp_config, policy_dir), 0, 0},
        {"TLSName", parse_tls_name, 0, 0, 0},
        {"KeepAliveSeconds", parse_uint, offsetof(struct mp_config, keepalive), 1, 86400},
        {"PushRate", parse_uint, offsetof(struct mp_config, push_rate), 0, 10000000},
        {"PushBatch", parse_uint, offsetof(struct mp_config, push_batch), 1, 1000000},
        {"PushExpiresSeconds", parse_uint, offsetof(struct mp_config, push_expires), 1, 30 * 86400},
        {"MaxFrameBytes", parse_uint, offsetof(struct mp_config, max_frame), 4096, 64 * 1024 * 1024},
        {"ShutdownReconnectRate", parse_uint, offsetof(struct mp_config, shutdown_reconnect_rate), 1,
         1000000},
        {"DeviceSyncURL", parse_string, offsetof(struct mp_config, devsync_url), 0, 0},
        {"DeviceSyncCAFile", parse_string, offsetof(struct mp_config, devsync_ca_file), 0, 0},
        {"DeviceSyncIntervalMinutes", parse_uint, offsetof(struct mp_config, devsync_interval_min), 1, 1440},
        {"DeviceSyncIntervalSeconds", parse_uint, offsetof(struct mp_config, devsync_interval_sec), 1,
         86400},
        {"DeviceSyncBatchSize", parse_uint, offsetof(struct mp_config, devsync_batch), 1, 10000},
        {"Verbose", parse_bool, offsetof(struct mp_config, verbose), 0, 0},
        {"MaxSignInBytes", parse_uint, offsetof(struct mp_config, max_signin), 4096, 1024 * 1024},
        {"RequestTimeoutSeconds", parse_uint, offsetof(struct mp_config, request_timeout), 1, 3600},
        {"MaxConnections", parse_uint, offsetof(struct mp_config, max_conns), 1, 10000000},
        {"MaxUnauthenticated", parse_uint, offsetof(struct mp_config, max_unauth), 1, 10000000},
        {"MaxUnauthenticatedPerAddress", parse_uint, offsetof(struct mp_config, max_unauth_per_addr), 1,
         10000000},
        {"MaxBufferedBodyBytes", parse_uint, offsetof(struct mp_config, max_body_total), 1024 * 1024,
         UINT32_MAX},
        {"OverloadRetryAfterSeconds", parse_uint, offsetof(struct mp_config, overload_retry_after), 1,
         86400},
};

int mp_config_set(struct mp_config *c, const char *key, const char *value) {
        for (size_t i = 0; i < ELEMENTSOF(config_keys); i++)
                if (strcasecmp(config_keys[i].name, key) == 0)
                        return config_keys[i].parse(c, value, config_keys[i].offset, config_keys[i].min,
                                                    config_keys[i].max);
        return -ENOENT;
}

struct load_ctx {
        struct mp_config *c;
        const char *path;
};

/* Debian's inih is built without INI_HANDLER_LINENO: the warnings name the
 * file, section and key instead of the line. */
static int on_ini_line(void *user, const char *section, const char *name, const char *value) {
        struct load_ctx *l = user;
        int r;

        if (strcasecmp(section, "MP") != 0) {
                log_warning("%s: unknown section [%s], ignoring", l->path, section);
                return 1;
        }
        r = mp_config_set(l->c, name, value);
        if (r == -ENOENT)
                log_warning("%s: [%s] unknown key '%s', ignoring", l->path, section, name);
        else if (r < 0)
                log_warning("%s: [%s] bad value '%s' for %s, keeping the previous value", l->path, section,
                            value, name);
        return 1; /* a bad line never stops the parse */
}

int mp_config_load(struct mp_config *c, const char *path) {
        struct load_ctx l = {c, path};
        int r;

        r = ini_parse(path, on_ini_line, &l);
        if (r == -1)
                return -errno ? -errno : -ENOENT;
        if (r < 0)
                return -ENOMEM;
        if (r > 0)
                log_warning("%s:%d: syntax error, the rest of the line was ignored", path, r);
        return 0;
}

int mp_config_load_credentials(struct mp_config *c) {
        const char *dir = getenv("CREDENTIALS_DIRECTORY");
        _cleanup_(freep) char *path = NULL;
        _cleanup_(freep) char *token = NULL;
        int r;

        if (!dir || !*dir)
                return 0;
        path = path_join(dir, "enrolment-token");
        if (!path)
                return -ENOMEM;
        if (access(path, F_OK) < 0)
                return errno == ENOENT ? 0 : log_error_errno(-errno, "Failed to access %s: %m", path);
        r = read_token_file(path, &token);
        if (r < 0)
                return r;
        /* The unit's fallback (SetCredential=) is an empty line: no token. */
        if (!*token)
                return 0;
        free(c->token);
        c->token = TAKE_PTR(token);
        return 0;
}
