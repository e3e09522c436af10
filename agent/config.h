/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * tetherd's configuration: /etc/tether/tether.conf, then every
 * /etc/tether/tether.conf.d/ *.conf in name order, INI read with inih. Each
 * key maps to a parser and an offset in struct tether_config through one
 * table (config.c). A bad value is an error that names file, line and key;
 * the default (or the earlier value) is kept. conf/tether.conf documents
 * every key.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "agent/channel.h"
#include "common/cleanup.h"
#include "common/tasktype.h"

struct tether_config {
        /* [mp] */
        char *mp_host;
        uint16_t tcp_port;
        uint16_t https_port;
        enum tether_channel_mode transport;
        char *ca_file;
        char *server_fingerprint;
        char *proxy;
        uint32_t https_hold_seconds;
        struct tether_port_list https_alt_ports; /* after https_port; default 443 */
        uint64_t tcp_retry_usec;                 /* auto mode on HTTPS: retry TCP; default 60 s */
        /* [trust] */
        char *site_key;
        char *site_key_fingerprint;
        bool trust_on_first_use;
        /* [agent] */
        char *state_dir;
        char *runtime_dir;
        char *user;
        uint32_t max_frame;
        uint32_t keepalive_seconds;
        char *enrolment_token;
        uint32_t start_delay_max_seconds;      /* every start */
        uint32_t boot_start_delay_max_seconds; /* only soon after boot */
        uint32_t respawn_delay_max_seconds;    /* cap of the channel process's respawn backoff */
        char *machine_id_file;
        uint32_t key_rotation_days; /* 0: no periodic device key rotation */
        /* [cycles] indexed by enum tether_task_type; keys from its table */
        char *cycles_dir;
        uint64_t timeout_usec[TETHER_TASK_TYPE_MAX + 1];
        uint64_t interval_usec[TETHER_TASK_TYPE_MAX + 1];
        bool enabled[TETHER_TASK_TYPE_MAX + 1];
        uint64_t kill_grace_usec;
        uint64_t output_cap;
        /* [log] */
        int log_level;
        char *cmtrace_file;

        /* Every error found while loading, "file:line: [section] key: reason". */
        char **errors;
        size_t n_errors;
        /* The files read, in order (for logs). */
        char **files;
        size_t n_files;
};

/*
 * Loads main_path (required) and the drop-ins in main_path + ".d"/ *.conf
 * (optional). On success *ret always holds a usable configuration (defaults
 * where values were bad) and ret->errors lists every problem; the caller
 * decides whether errors are fatal. Returns -ENOMEM only.
 */
int tether_config_load(const char *main_path, struct tether_config **ret);

/* Defaults only, with no file (for tests and the daemon's fallback). */
int tether_config_new_default(struct tether_config **ret);

/* Seconds after boot during which a start counts as "after boot". */
#define TETHER_BOOT_WINDOW_SECONDS 600u

/* The spread of the first connection (PROTOCOL-v1 section 5): up to
 * start_delay_max_seconds always, and up to boot_start_delay_max_seconds
 * when the machine has been up less than TETHER_BOOT_WINDOW_SECONDS, so that
 * a fleet powered on together never connects in step while an operator's
 * restart of the service connects at once. */
uint32_t tether_config_start_delay(const struct tether_config *c, uint64_t uptime_seconds);

struct tether_config *tether_config_free(struct tether_config *c); /* accepts NULL */
DEFINE_TRIVIAL_CLEANUP_FUNC(struct tether_config *, tether_config_free);

/* Applies one value as if it had been read at file:line (for tests and
 * overrides). Returns 0, or -EINVAL after recording an error. */
int tether_config_set(struct tether_config *c, const char *file, unsigned line, const char *section,
                      const char *key, const char *value);

/* Cross-key checks (host present, a site key trust mode chosen); records
 * errors against the main file. Called by tether_config_load(). */
void tether_config_validate(struct tether_config *c, const char *main_path);

const char *tether_config_transport_name(enum tether_channel_mode m);

/* The key table, for tests and documentation checks: the i-th key's
 * section and name; false past the end. */
bool tether_config_key_at(size_t i, const char **ret_section, const char **ret_key);

#define TETHER_DEFAULT_CONFIG TETHER_SYSCONFDIR_STR "/tether.conf"

/* tetherd's exit status when the configuration (not a crash, not the
 * network) makes running pointless: EX_CONFIG of sysexits.h, named in the
 * unit's RestartPreventExitStatus= so that systemd does not restart it. */
#define TETHER_EXIT_CONFIG 78

/*
 * Checks that the files the configuration names can be used by the
 * calling process: site_key loads, ca_file and machine_id_file (when it
 * exists) can be read. Called by --check-config, once as root and once as
 * the channel process's user (who reads them at run time), and by the
 * channel process itself after it dropped its privileges. Each problem is
 * passed to report as "config_path: [section] key: reason", prefixed with
 * who when who is not NULL. Returns the number of problems.
 */
typedef void (*tether_config_report_fn)(void *userdata, const char *line);
unsigned tether_config_check_files(const struct tether_config *c, const char *config_path, const char *who,
                                   tether_config_report_fn report, void *userdata);
