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

#include <ini.h>

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
        c->overload_retry_after = 30;
}

void mp_config_done(struct mp_config *c) {
        free(c->state_dir);
        free(c->store);
        free(c->node_id);
        free(c->listen);
        free(c->https_listen);
        free(c->admin_socket);
        free(c->admin_group);
        free(c->token);
        free(c->policy_dir);
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
        {"HTTPSListen", parse_string, offsetof(struct mp_config, https_listen), 0, 0},
        {"AdminSocket", parse_string, offsetof(struct mp_config, admin_socket), 0, 0},
        {"AdminSocketGroup", parse_string, offsetof(struct mp_config, admin_group), 0, 0},
        {"Approval", parse_approval, 0, 0, 0},
        {"EnrolmentToken", parse_string, offsetof(struct mp_config, token), 0, 0},
        {"PolicyDirectory", parse_string, offsetof(struct mp_config, policy_dir), 0, 0},
        {"TLSName", parse_tls_name, 0, 0, 0},
        {"KeepAliveSeconds", parse_uint, offsetof(struct mp_config, keepalive), 1, 86400},
        {"PushRate", parse_uint, offsetof(struct mp_config, push_rate), 0, 10000000},
        {"PushBatch", parse_uint, offsetof(struct mp_config, push_batch), 1, 1000000},
        {"PushExpiresSeconds", parse_uint, offsetof(struct mp_config, push_expires), 1, 30 * 86400},
        {"MaxFrameBytes", parse_uint, offsetof(struct mp_config, max_frame), 4096, 64 * 1024 * 1024},
        {"ShutdownReconnectRate", parse_uint, offsetof(struct mp_config, shutdown_reconnect_rate), 1,
         1000000},
        {"MaxConnections", parse_uint, offsetof(struct mp_config, max_connections), 0, 100000000},
        {"OverloadRetryAfterSeconds", parse_uint, offsetof(struct mp_config, overload_retry_after), 1, 3600},
        {"Verbose", parse_bool, offsetof(struct mp_config, verbose), 0, 0},
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
