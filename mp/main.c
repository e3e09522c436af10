/* SPDX-License-Identifier: Apache-2.0 */
/* tether-mp: the reference management point. See docs/tether-mp.md. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <systemd/sd-journal.h>
#include <sys/stat.h>

#include "common/log.h"
#include "common/strutil.h"
#include "mp/mp.h"
#include "transport/sign.h"

#define DEFAULT_STATE_DIR "/var/lib/tether-mp"

static void help_main(void) {
        printf("Usage: tether-mp COMMAND [OPTIONS]\n"
               "\n"
               "The reference management point of Tether: holds agent channels, pushes\n"
               "tasks, records signed responses, serves policies and the HTTPS fallback.\n"
               "\n"
               "Server:\n"
               "  serve          run the management point (tether-mp serve --help)\n"
               "  site-key       print the site key's fingerprint and public key\n"
               "  tls-fingerprint print the SHA-256 fingerprint of the TLS key\n"
               "\n"
               "Administration (talks to a running server over its admin socket):\n"
               "  status         server figures (connections, ports)\n"
               "  devices        list devices with their online state\n"
               "  approve ID     approve a pending device\n"
               "  reject ID      reject a device\n"
               "  conflicts      ClientID/key conflicts (cloned images)\n"
               "  push           push a task to devices\n"
               "  push-status ID per-device state of a push\n"
               "  responses      recent responses, newest first\n"
               "  site-key status the site key chain and the devices that follow each key\n"
               "  site-key rotate [--not-before TIME] make, endorse and start the next site key\n"
               "  key-events     device key rotations and refused rollovers\n"
               "  user add NAME  add a console account (--role ROLE)\n"
               "  audit verify   check the console's hash-chained audit log\n"
               "  audit export   the audit log as JSON lines\n"
               "\n"
               "Run 'tether-mp COMMAND --help' for a command's options.\n");
}

static void help_serve(void) {
        printf("Usage: tether-mp serve --state-dir DIR [OPTIONS]\n"
               "\n"
               "  --state-dir DIR          keys, certificate, records (default " DEFAULT_STATE_DIR ")\n"
               "  --config FILE            INI configuration ([MP] section, see tether-mp.conf)\n"
               "  --listen ADDR:PORT       TLS frame channel (default 0.0.0.0:10123; port 0 = any)\n"
               "  --https-listen ADDR:PORT[,ADDR:PORT...] HTTPS fallback and policies, up to 4\n"
               "                           listeners (default 0.0.0.0:10124; 'off')\n"
               "  --console-listen ADDR:PORT the console and REST API, HTTPS (default 0.0.0.0:10125; "
               "'off')\n"
               "  --console-webroot DIR    the web console's files (default " TETHER_MP_WEBROOT ")\n"
               "  --admin-socket PATH      admin API socket (default DIR/admin.sock)\n"
               "  --admin-group GROUP      make the admin socket 0660 for this group\n"
               "  --approval MODE          auto | manual | token (default auto)\n"
               "  --token TOKEN            the enrolment token for --approval token\n"
               "  --token-file FILE        read it from FILE (first line) instead; under\n"
               "                           systemd the credential enrolment-token is read too\n"
               "  --policy-dir DIR         policies (default DIR/policies)\n"
               "  --tls-name NAME          a name for the TLS certificate (repeatable; first start)\n"
               "  --keepalive SECONDS      KeepAliveSeconds told to agents (default 180)\n"
               "  --push-rate N            fan-out frames per second, 0 = unlimited (default 1000)\n"
               "  --push-batch N           fan-out batch size (default 200)\n"
               "  --push-expires SECONDS   default push lifetime (default 3600)\n"
               "  --store SPEC             the records: an SQLite file (default <state-dir>/tether-mp.db)\n"
               "                           or postgresql://... (Store= in the file)\n"
               "  --node-id ID             this node's ID among several on one PostgreSQL\n"
               "                           (default: <state-dir>/node-id, made at first start)\n"
               "  --check                  parse the configuration, print 'configuration OK', exit\n"
               "  --verbose                debug logging\n"
               "\n"
               "With port 0 the bound ports are written to DIR/ports as 'tcp=PORT' and\n"
               "'https=PORT' (and 'console=PORT'). SIGTERM sends GOODBYE(shutdown) to every agent and exits "
               "0.\n");
}

static void journal_sink(int priority, const char *message, const char *const *fields, void *userdata) {
        struct iovec iov[16];
        char prio[16], *msg = NULL, *ident = NULL;
        size_t n = 0;

        (void)userdata;
        if (asprintf(&msg, "MESSAGE=%s", message) < 0)
                return;
        snprintf(prio, sizeof(prio), "PRIORITY=%d", priority);
        if (asprintf(&ident, "SYSLOG_IDENTIFIER=%s", log_get_tag()) < 0) {
                free(msg);
                return;
        }
        iov[n++] = (struct iovec){msg, strlen(msg)};
        iov[n++] = (struct iovec){prio, strlen(prio)};
        iov[n++] = (struct iovec){ident, strlen(ident)};
        for (size_t i = 0; fields && fields[i] && n < ELEMENTSOF(iov); i++)
                iov[n++] = (struct iovec){(void *)fields[i], strlen(fields[i])};
        (void)sd_journal_sendv(iov, (int)n);
        free(msg);
        free(ident);
}

/* Under systemd, stderr is the journal stream: log natively instead, so the
 * structured fields (PUSH_ID, TASK_GUID, RETURN_CODE) are kept. */
static void setup_logging(bool verbose) {
        const char *js = getenv("JOURNAL_STREAM");
        struct stat st;

        log_set_tag("tether-mp");
        log_set_max_level(verbose ? LOG_DEBUG : LOG_INFO);
        if (js && fstat(STDERR_FILENO, &st) == 0) {
                char expect[64];
                snprintf(expect, sizeof(expect), "%llu:%llu", (unsigned long long)st.st_dev,
                         (unsigned long long)st.st_ino);
                if (strcmp(expect, js) == 0)
                        log_set_sink(journal_sink, NULL);
        }
}

static int set_default(char **field, const char *dir, const char *name) {
        if (*field)
                return 0;
        if (asprintf(field, "%s/%s", dir, name) < 0) {
                *field = NULL;
                return -ENOMEM;
        }
        return 0;
}

static int cmd_serve(int argc, char **argv) {
        enum {
                ARG_STATE = 0x100,
                ARG_CONFIG,
                ARG_LISTEN,
                ARG_HTTPS,
                ARG_ADMIN,
                ARG_ADMIN_GROUP,
                ARG_APPROVAL,
                ARG_TOKEN,
                ARG_TOKEN_FILE,
                ARG_POLICY,
                ARG_TLS_NAME,
                ARG_KEEPALIVE,
                ARG_RATE,
                ARG_BATCH,
                ARG_EXPIRES,
                ARG_STORE,
                ARG_NODE_ID,
                ARG_CONSOLE,
                ARG_WEBROOT,
                ARG_CHECK,
        };
        static const struct option opts[] = {
                {"help", no_argument, NULL, 'h'},
                {"state-dir", required_argument, NULL, ARG_STATE},
                {"config", required_argument, NULL, ARG_CONFIG},
                {"listen", required_argument, NULL, ARG_LISTEN},
                {"https-listen", required_argument, NULL, ARG_HTTPS},
                {"admin-socket", required_argument, NULL, ARG_ADMIN},
                {"admin-group", required_argument, NULL, ARG_ADMIN_GROUP},
                {"approval", required_argument, NULL, ARG_APPROVAL},
                {"token", required_argument, NULL, ARG_TOKEN},
                {"token-file", required_argument, NULL, ARG_TOKEN_FILE},
                {"policy-dir", required_argument, NULL, ARG_POLICY},
                {"tls-name", required_argument, NULL, ARG_TLS_NAME},
                {"keepalive", required_argument, NULL, ARG_KEEPALIVE},
                {"push-rate", required_argument, NULL, ARG_RATE},
                {"push-batch", required_argument, NULL, ARG_BATCH},
                {"push-expires", required_argument, NULL, ARG_EXPIRES},
                {"store", required_argument, NULL, ARG_STORE},
                {"node-id", required_argument, NULL, ARG_NODE_ID},
                {"console-listen", required_argument, NULL, ARG_CONSOLE},
                {"console-webroot", required_argument, NULL, ARG_WEBROOT},
                {"check", no_argument, NULL, ARG_CHECK},
                {"verbose", no_argument, NULL, 'v'},
                {},
        };
        static const char *const key_of[] = {
                [ARG_STATE - ARG_STATE] = "StateDirectory",
                [ARG_LISTEN - ARG_STATE] = "Listen",
                [ARG_HTTPS - ARG_STATE] = "HTTPSListen",
                [ARG_ADMIN - ARG_STATE] = "AdminSocket",
                [ARG_ADMIN_GROUP - ARG_STATE] = "AdminSocketGroup",
                [ARG_APPROVAL - ARG_STATE] = "Approval",
                [ARG_TOKEN - ARG_STATE] = "EnrolmentToken",
                [ARG_TOKEN_FILE - ARG_STATE] = "EnrolmentTokenFile",
                [ARG_POLICY - ARG_STATE] = "PolicyDirectory",
                [ARG_TLS_NAME - ARG_STATE] = "TLSName",
                [ARG_KEEPALIVE - ARG_STATE] = "KeepAliveSeconds",
                [ARG_RATE - ARG_STATE] = "PushRate",
                [ARG_BATCH - ARG_STATE] = "PushBatch",
                [ARG_EXPIRES - ARG_STATE] = "PushExpiresSeconds",
                [ARG_STORE - ARG_STATE] = "Store",
                [ARG_NODE_ID - ARG_STATE] = "NodeID",
                [ARG_CONSOLE - ARG_STATE] = "ConsoleListen",
                [ARG_WEBROOT - ARG_STATE] = "ConsoleWebRoot",
        };
        struct mp_config cfg;
        struct mp_server *srv = NULL;
        const char *config_file = NULL;
        bool check = false, verbose = false;
        int c, r;

        mp_config_init(&cfg);
        /* First pass: the configuration file, so the command line wins. */
        optind = 1;
        while ((c = getopt_long(argc, argv, "hv", opts, NULL)) >= 0)
                if (c == ARG_CONFIG)
                        config_file = optarg;
                else if (c == 'v')
                        verbose = true;
                else if (c == 'h') {
                        help_serve();
                        mp_config_done(&cfg);
                        return 0;
                } else if (c == '?') {
                        mp_config_done(&cfg);
                        return 2;
                }
        setup_logging(verbose);
        if (config_file) {
                r = mp_config_load(&cfg, config_file);
                if (r < 0) {
                        log_error_errno(r, "Failed to read %s: %m", config_file);
                        mp_config_done(&cfg);
                        return 1;
                }
        }
        /* Credentials win over the file, the command line over both. */
        if (mp_config_load_credentials(&cfg) < 0) {
                mp_config_done(&cfg);
                return 1;
        }
        bool names_from_cli = false;
        optind = 1;
        while ((c = getopt_long(argc, argv, "hv", opts, NULL)) >= 0) {
                if (c == ARG_CONFIG || c == 'v' || c == 'h')
                        continue;
                if (c == ARG_CHECK) {
                        check = true;
                        continue;
                }
                if (c == ARG_TLS_NAME && !names_from_cli) {
                        /* names on the command line replace the file's */
                        for (unsigned i = 0; i < cfg.n_tls_names; i++)
                                free(cfg.tls_names[i]);
                        cfg.n_tls_names = 0;
                        names_from_cli = true;
                }
                if (c < ARG_STATE || c > ARG_WEBROOT || !key_of[c - ARG_STATE]) {
                        mp_config_done(&cfg);
                        return 2;
                }
                r = mp_config_set(&cfg, key_of[c - ARG_STATE], optarg);
                if (r < 0) {
                        log_error("Bad value '%s' for --%s", optarg, opts[c - ARG_STATE + 1].name);
                        mp_config_done(&cfg);
                        return 2;
                }
        }
        if (optind < argc) {
                log_error("Unexpected argument '%s'", argv[optind]);
                mp_config_done(&cfg);
                return 2;
        }
        if (verbose)
                cfg.verbose = true;
        log_set_max_level(cfg.verbose ? LOG_DEBUG : LOG_INFO);
        if ((!cfg.state_dir && mp_config_set(&cfg, "StateDirectory", DEFAULT_STATE_DIR) < 0) ||
            (!cfg.listen && mp_config_set(&cfg, "Listen", "0.0.0.0:10123") < 0) ||
            (!cfg.https_listen && mp_config_set(&cfg, "HTTPSListen", "0.0.0.0:10124") < 0) ||
            (!cfg.console_listen && mp_config_set(&cfg, "ConsoleListen", "0.0.0.0:10125") < 0) ||
            (!cfg.console_webroot && mp_config_set(&cfg, "ConsoleWebRoot", TETHER_MP_WEBROOT) < 0) ||
            set_default(&cfg.admin_socket, cfg.state_dir, "admin.sock") < 0 ||
            set_default(&cfg.policy_dir, cfg.state_dir, "policies") < 0) {
                mp_config_done(&cfg);
                return 1;
        }
        if (cfg.approval == MP_APPROVAL_TOKEN && (!cfg.token || !*cfg.token)) {
                log_error("Approval mode 'token' needs a token: the credential enrolment-token, "
                          "--token(-file), EnrolmentToken= or EnrolmentTokenFile=");
                mp_config_done(&cfg);
                return 2;
        }
        if (check) {
                printf("configuration OK\n");
                mp_config_done(&cfg);
                return 0;
        }

        r = mp_server_new(&cfg, &srv);
        if (r >= 0)
                r = mp_server_run(srv);
        mp_server_free(srv);
        mp_config_done(&cfg);
        return r < 0 ? 1 : 0;
}

static int cmd_site_key(int argc, char **argv, bool tls) {
        static const struct option opts[] = {
                {"help", no_argument, NULL, 'h'},
                {"state-dir", required_argument, NULL, 's'},
                {},
        };
        struct mp_config cfg;
        struct tether_key *site = NULL, *tls_key = NULL;
        _cleanup_(freep) char *pem = NULL, *cert = NULL;
        char fpr[TETHER_FINGERPRINT_LEN];
        int c, r;

        mp_config_init(&cfg);
        log_set_tag("tether-mp");
        optind = 1;
        while ((c = getopt_long(argc, argv, "hs:", opts, NULL)) >= 0) {
                if (c == 'h') {
                        printf("Usage: tether-mp %s --state-dir DIR\n\n%s",
                               tls ? "tls-fingerprint" : "site-key",
                               tls ? "Prints the SHA-256 fingerprint of the TLS key (for agents that pin "
                                     "the "
                                     "server's TLS key).\n"
                                   : "Prints 'fingerprint: <sha256 hex>' and the site public key PEM; "
                                     "creates "
                                     "the keys when missing.\n");
                        mp_config_done(&cfg);
                        return 0;
                }
                if (c != 's') {
                        mp_config_done(&cfg);
                        return 2;
                }
                free(cfg.state_dir);
                cfg.state_dir = strdup(optarg);
        }
        if (!cfg.state_dir)
                cfg.state_dir = strdup(DEFAULT_STATE_DIR);
        r = mp_state_load(&cfg, true, &site, tls ? &tls_key : NULL, tls ? &cert : NULL);
        if (r < 0) {
                mp_config_done(&cfg);
                return 1;
        }
        if (tls) {
                r = tether_key_fingerprint(tls_key, fpr);
                if (r >= 0)
                        printf("%s\n", fpr);
        } else {
                r = tether_key_fingerprint(site, fpr);
                if (r >= 0)
                        r = tether_key_public_pem(site, &pem);
                if (r >= 0)
                        printf("fingerprint: %s\n%s", fpr, pem);
        }
        tether_key_free(site);
        tether_key_free(tls_key);
        mp_config_done(&cfg);
        if (r < 0) {
                log_error_errno(r, "Failed to print the key: %m");
                return 1;
        }
        return 0;
}

int main(int argc, char **argv) {
        const char *cmd;

        if (argc < 2) {
                help_main();
                return 2;
        }
        cmd = argv[1];
        if (!strcmp(cmd, "--help") || !strcmp(cmd, "-h") || !strcmp(cmd, "help")) {
                help_main();
                return 0;
        }
        if (!strcmp(cmd, "--version")) {
                printf("tether-mp 0.1.0\n");
                return 0;
        }
        if (!strcmp(cmd, "serve"))
                return cmd_serve(argc - 1, argv + 1);
        if (!strcmp(cmd, "site-key") && argc >= 3 && !strcmp(argv[2], "rotate"))
                return mp_cli_main("site-key-rotate", argc - 2, argv + 2);
        if (!strcmp(cmd, "site-key") && argc >= 3 && !strcmp(argv[2], "status"))
                return mp_cli_main("site-key-status", argc - 2, argv + 2);
        if (!strcmp(cmd, "site-key"))
                return cmd_site_key(argc - 1, argv + 1, false);
        if (!strcmp(cmd, "tls-fingerprint"))
                return cmd_site_key(argc - 1, argv + 1, true);
        return mp_cli_main(cmd, argc - 1, argv + 1);
}
