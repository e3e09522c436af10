/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The admin commands: each is one HTTP request over the admin unix socket
 * (libcurl with CURLOPT_UNIX_SOCKET_PATH), its JSON answer parsed by json-c.
 * Exit codes: 0 done, 1 failed, 2 usage, 3 push-status --wait timed out.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

#include "common/log.h"
#include "common/strutil.h"
#include "common/tasktype.h"
#include "mp/mp.h"

#define DEFAULT_SOCKET "/var/lib/tether-mp/admin.sock"

struct cli {
        char socket[4096];
        bool json;
        long status;
        json_object *reply;
        char *raw;
};

struct growbuf {
        char *data;
        size_t len;
};

static size_t on_data(char *ptr, size_t size, size_t nmemb, void *userdata) {
        struct growbuf *b = userdata;
        size_t n = size * nmemb;
        char *t = realloc(b->data, b->len + n + 1);

        if (!t)
                return 0;
        memcpy(t + b->len, ptr, n);
        b->len += n;
        t[b->len] = 0;
        b->data = t;
        return n;
}

/* Performs one request; on success cli->reply holds the parsed JSON. */
static int request(struct cli *cli, const char *method, const char *path, const char *body, long timeout) {
        struct growbuf b = {0};
        struct curl_slist *headers = NULL;
        char url[1024];
        CURL *curl;
        CURLcode rc;

        curl = curl_easy_init();
        if (!curl)
                return -ENOMEM;
        snprintf(url, sizeof(url), "http://localhost%s", path);
        curl_easy_setopt(curl, CURLOPT_UNIX_SOCKET_PATH, cli->socket);
        curl_easy_setopt(curl, CURLOPT_URL, url);
        curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, method);
        curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, on_data);
        curl_easy_setopt(curl, CURLOPT_WRITEDATA, &b);
        curl_easy_setopt(curl, CURLOPT_TIMEOUT, timeout);
        curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
        if (body) {
                headers = curl_slist_append(headers, "Content-Type: application/json");
                curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
                curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body);
        }
        rc = curl_easy_perform(curl);
        if (rc == CURLE_OK)
                curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &cli->status);
        curl_slist_free_all(headers);
        curl_easy_cleanup(curl);
        if (rc != CURLE_OK) {
                free(b.data);
                fprintf(stderr, "tether-mp: cannot reach the server at %s: %s\n", cli->socket,
                        curl_easy_strerror(rc));
                return -EIO;
        }
        cli->raw = b.data;
        cli->reply = b.data ? json_tokener_parse(b.data) : NULL;
        if (!cli->reply) {
                fprintf(stderr, "tether-mp: the server's answer is not JSON (HTTP %ld)\n", cli->status);
                return -EBADMSG;
        }
        if (cli->status < 200 || cli->status >= 300) {
                json_object *e;
                fprintf(stderr, "tether-mp: %s\n",
                        json_object_object_get_ex(cli->reply, "error", &e) ? json_object_get_string(e)
                                                                           : "request failed");
                return -EREMOTEIO;
        }
        return 0;
}

static void cli_done(struct cli *cli) {
        json_object_put(cli->reply);
        free(cli->raw);
}

static const char *str(json_object *o, const char *key) {
        json_object *v;

        if (!o || !json_object_object_get_ex(o, key, &v) || json_object_is_type(v, json_type_null))
                return "";
        return json_object_get_string(v);
}

static void print_json(json_object *o) {
        printf("%s\n",
               json_object_to_json_string_ext(o, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_NOSLASHESCAPE));
}

static int usage(const char *cmd, const char *text) {
        printf("Usage: tether-mp %s %s\n\n"
               "Common options:\n"
               "  --admin-socket PATH   the server's admin socket\n"
               "  --state-dir DIR       meaning DIR/admin.sock (default %s)\n"
               "  --json                print the raw JSON answer\n",
               cmd, text, DEFAULT_SOCKET);
        return 0;
}

static int cmd_devices(struct cli *cli) {
        json_object *arr;
        int r = request(cli, "GET", "/v1/devices", NULL, 30);

        if (r < 0)
                return 1;
        if (cli->json) {
                print_json(cli->reply);
                return 0;
        }
        if (!json_object_object_get_ex(cli->reply, "devices", &arr))
                return 1;
        printf("%-36s  %-20s  %-8s  %-7s  %-20s  %-22s  %-64s  %s\n", "CLIENTID", "HOSTNAME", "STATUS",
               "ONLINE", "LAST SEEN", "ADDRESS", "KEY FINGERPRINT", "CONFLICT");
        for (size_t i = 0; i < json_object_array_length(arr); i++) {
                json_object *d = json_object_array_get_idx(arr, i), *on;
                bool online = json_object_object_get_ex(d, "online", &on) && json_object_get_boolean(on);

                printf("%-36s  %-20s  %-8s  %-7s  %-20s  %-22s  %-64s  %s\n", str(d, "client_id"),
                       str(d, "hostname"), str(d, "status"), online ? "online" : "offline",
                       str(d, "last_seen"), str(d, "address"), str(d, "fingerprint"),
                       str(d, "conflict")[0] ? str(d, "conflict") : "-");
        }
        return 0;
}

static int cmd_decide(struct cli *cli, const char *id, const char *verb) {
        char path[256];

        if (!tether_guid_valid(id)) {
                fprintf(stderr, "tether-mp: '%s' is not a ClientID (uppercase GUID)\n", id);
                return 2;
        }
        snprintf(path, sizeof(path), "/v1/devices/%s/%s", id, verb);
        if (request(cli, "POST", path, "{}", 30) < 0)
                return 1;
        if (cli->json)
                print_json(cli->reply);
        else
                printf("%s: %s\n", id, str(cli->reply, "status"));
        return 0;
}

static int cmd_conflicts(struct cli *cli) {
        json_object *arr;

        if (request(cli, "GET", "/v1/conflicts", NULL, 30) < 0)
                return 1;
        if (cli->json) {
                print_json(cli->reply);
                return 0;
        }
        if (!json_object_object_get_ex(cli->reply, "conflicts", &arr))
                return 1;
        printf("%-36s  %-18s  %-20s  %-6s  %s\n", "CLIENTID", "KIND", "LAST SEEN", "COUNT", "DETAIL");
        for (size_t i = 0; i < json_object_array_length(arr); i++) {
                json_object *d = json_object_array_get_idx(arr, i);
                bool duplicate = strcmp(str(d, "kind"), "duplicate-identity") == 0;

                printf("%-36s  %-18s  %-20s  %-6s  ", str(d, "client_id"),
                       str(d, "kind")[0] ? str(d, "kind") : "key", str(d, "last_seen"), str(d, "count"));
                if (duplicate)
                        /* two devices, one key: say where each one is */
                        printf("'%s' at %s was refused while '%s' at %s holds the channel; shared key %s\n",
                               str(d, "hostname"), str(d, "address"), str(d, "established_hostname"),
                               str(d, "established_address"), str(d, "known_fingerprint"));
                else
                        printf("'%s' at %s offered key %s; bound key %s\n", str(d, "hostname"),
                               str(d, "address"), str(d, "offered_fingerprint"),
                               str(d, "known_fingerprint"));
        }
        return 0;
}

static int parse_task_type(const char *s, uint32_t *ret) {
        uint64_t v;

        /* The names of common/tasktype.h; any other number too (for tests of
         * NotSupported). */
        if ((*ret = tether_task_type_from_string(s)) != 0)
                return 0;
        if (parse_u64(s, 1, 65535, &v) == 0)
                *ret = (uint32_t)v;
        else
                return -EINVAL;
        return 0;
}

static int cmd_push(struct cli *cli, uint32_t type, const char *param, uint32_t expires, bool all,
                    char **ids, int n) {
        _cleanup_(json_object_putp) json_object *req = json_object_new_object();
        json_object *arr;

        if (!req)
                return 1;
        json_object_object_add(req, "type", json_object_new_int((int)type));
        json_object_object_add(req, "param", json_object_new_string(param ? param : ""));
        if (expires)
                json_object_object_add(req, "expires", json_object_new_int64(expires));
        if (all) {
                json_object_object_add(req, "all", json_object_new_boolean(true));
        } else {
                arr = json_object_new_array();
                for (int i = 0; i < n; i++)
                        json_object_array_add(arr, json_object_new_string(ids[i]));
                json_object_object_add(req, "targets", arr);
        }
        if (request(cli, "POST", "/v1/pushes", json_object_to_json_string(req), 60) < 0)
                return 1;
        if (cli->json)
                print_json(cli->reply);
        else
                printf("PushID: %s TaskGUID: %s\n", str(cli->reply, "push_id"),
                       str(cli->reply, "task_guid"));
        return 0;
}

static int cmd_push_status(struct cli *cli, const char *id, uint64_t wait) {
        json_object *arr, *v;
        char path[256];
        uint64_t push_id;
        bool done, timed_out;

        if (parse_u64(id, 1, UINT64_MAX, &push_id) < 0) {
                fprintf(stderr, "tether-mp: '%s' is not a PushID\n", id);
                return 2;
        }
        if (wait)
                snprintf(path, sizeof(path), "/v1/pushes/%llu?wait=%llu", (unsigned long long)push_id,
                         (unsigned long long)wait);
        else
                snprintf(path, sizeof(path), "/v1/pushes/%llu", (unsigned long long)push_id);
        if (request(cli, "GET", path, NULL, (long)wait + 30) < 0)
                return 1;
        done = json_object_object_get_ex(cli->reply, "done", &v) && json_object_get_boolean(v);
        timed_out = wait > 0 && !done;
        if (cli->json) {
                print_json(cli->reply);
                return timed_out ? 3 : 0;
        }
        json_object *counts = NULL;
        json_object_object_get_ex(cli->reply, "counts", &counts);
        printf("PushID: %s TaskID: %s TaskGUID: %s TaskType: %s TaskParam: %s\n", str(cli->reply, "push_id"),
               str(cli->reply, "task_id"), str(cli->reply, "task_guid"), str(cli->reply, "task_type"),
               str(cli->reply, "task_param"));
        printf("Created: %s Expires: %s Targets: %s (pending %s, delivered %s, acknowledged %s, answered "
               "%s, "
               "expired %s)\n",
               str(cli->reply, "created"), str(cli->reply, "expires"), str(cli->reply, "total"),
               str(counts, "pending"), str(counts, "delivered"), str(counts, "acknowledged"),
               str(counts, "answered"), str(counts, "expired"));
        if (json_object_object_get_ex(cli->reply, "targets", &arr))
                for (size_t i = 0; i < json_object_array_length(arr); i++) {
                        json_object *t = json_object_array_get_idx(arr, i);

                        printf("%s  %s", str(t, "client_id"), str(t, "state"));
                        if (*str(t, "return_code"))
                                printf("  ReturnCode: %s (%s)  Detail: %s", str(t, "return_code"),
                                       str(t, "return_code_name"), str(t, "detail"));
                        printf("\n");
                        if (*str(t, "response_xml"))
                                printf("    %s\n", str(t, "response_xml"));
                }
        if (timed_out) {
                fprintf(stderr, "tether-mp: timed out after %llu s; not every target answered\n",
                        (unsigned long long)wait);
                return 3;
        }
        return 0;
}

static int cmd_responses(struct cli *cli, uint64_t limit) {
        json_object *arr;
        char path[64];

        snprintf(path, sizeof(path), "/v1/responses?limit=%llu", (unsigned long long)limit);
        if (request(cli, "GET", path, NULL, 30) < 0)
                return 1;
        if (cli->json) {
                print_json(cli->reply);
                return 0;
        }
        if (!json_object_object_get_ex(cli->reply, "responses", &arr))
                return 1;
        for (size_t i = 0; i < json_object_array_length(arr); i++) {
                json_object *t = json_object_array_get_idx(arr, i);

                printf("%s  %s  PushID: %s  TaskGUID: %s  ReturnCode: %s (%s)  Detail: %s\n    %s\n",
                       str(t, "received"), str(t, "client_id"), str(t, "push_id"), str(t, "task_guid"),
                       str(t, "return_code"), str(t, "return_code_name"), str(t, "detail"),
                       str(t, "response_xml"));
        }
        return 0;
}

static int cmd_status(struct cli *cli) {
        if (request(cli, "GET", "/v1/status", NULL, 30) < 0)
                return 1;
        if (cli->json) {
                print_json(cli->reply);
                return 0;
        }
        printf("Connections: %s (channel %s)\nOnline sessions: %s\nPorts: tcp=%s https=%s\nApproval: %s\n"
               "Site key fingerprint: %s\nPID: %s\n",
               str(cli->reply, "connections"), str(cli->reply, "channel_connections"),
               str(cli->reply, "sessions"), str(cli->reply, "tcp_port"), str(cli->reply, "https_port"),
               str(cli->reply, "approval"), str(cli->reply, "site_fingerprint"), str(cli->reply, "pid"));
        return 0;
}

/* site-key status / rotate: the chain, which key signs, and how many
 * devices confirmed each key. */
static int cmd_site_key(struct cli *cli, bool rotate, const char *not_before) {
        char path[256];
        json_object *arr;

        snprintf(path, sizeof(path), "/v1/site-key%s%s", rotate ? "/rotate" : "",
                 rotate && not_before ? "?not_before=" : "");
        if (rotate && not_before)
                strscpy(path + strlen(path), sizeof(path) - strlen(path), not_before);
        if (request(cli, rotate ? "POST" : "GET", path, NULL, 60) < 0)
                return 1;
        if (cli->json) {
                print_json(cli->reply);
                return 0;
        }
        printf("%-7s %-64s %-20s %-8s %s\n", "SERIAL", "FINGERPRINT", "NOT-BEFORE", "SIGNING", "DEVICES");
        if (json_object_object_get_ex(cli->reply, "chain", &arr))
                for (size_t i = 0; i < json_object_array_length(arr); i++) {
                        json_object *k = json_object_array_get_idx(arr, i);
                        printf("%-7s %-64s %-20s %-8s %s\n", str(k, "serial"), str(k, "fingerprint"),
                               str(k, "not_before")[0] ? str(k, "not_before") : "-",
                               !strcmp(str(k, "signing"), "true") ? "yes" : "no",
                               str(k, "devices_confirmed"));
                }
        return 0;
}

static int cmd_key_events(struct cli *cli) {
        json_object *arr;

        if (request(cli, "GET", "/v1/key-events", NULL, 30) < 0)
                return 1;
        if (cli->json) {
                print_json(cli->reply);
                return 0;
        }
        if (json_object_object_get_ex(cli->reply, "key_events", &arr))
                for (size_t i = 0; i < json_object_array_length(arr); i++) {
                        json_object *e = json_object_array_get_idx(arr, i);
                        printf("%s %s %.16s... -> %.16s... %s\n", str(e, "client_id"), str(e, "kind"),
                               str(e, "old_fingerprint"), str(e, "new_fingerprint"), str(e, "reason"));
                }
        return 0;
}

/* tether-mp user add NAME --role ROLE [--collection C] [--password-stdin] */
static int cmd_user_add(struct cli *cli, const char *name, const char *role, const char *coll,
                        bool pw_stdin) {
        _cleanup_(json_object_putp) json_object *req = json_object_new_object();
        char pw[1024] = "";

        if (!req)
                return 1;
        if (pw_stdin) {
                if (!fgets(pw, sizeof(pw), stdin)) {
                        fprintf(stderr, "tether-mp: no password on standard input\n");
                        return 2;
                }
                pw[strcspn(pw, "\r\n")] = 0;
                json_object_object_add(req, "password", json_object_new_string(pw));
        }
        json_object_object_add(req, "name", json_object_new_string(name));
        json_object_object_add(req, "role", json_object_new_string(role));
        if (coll)
                json_object_object_add(req, "collection", json_object_new_string(coll));
        explicit_bzero(pw, sizeof(pw));
        if (request(cli, "POST", "/v1/users", json_object_to_json_string(req), 60) < 0)
                return 1;
        if (cli->json)
                print_json(cli->reply);
        else if (str(cli->reply, "password")[0])
                printf("User %s added (%s on %s). One-time password, shown only now:\n%s\n", name, role,
                       str(cli->reply, "collection"), str(cli->reply, "password"));
        else
                printf("User %s added (%s on %s).\n", name, role, str(cli->reply, "collection"));
        return 0;
}

/* tether-mp audit verify: exit 0 intact, 1 broken (or unreadable). */
static int cmd_audit_verify(struct cli *cli) {
        json_object *v;

        if (request(cli, "GET", "/v1/audit/verify", NULL, 300) < 0)
                return 1;
        if (cli->json)
                print_json(cli->reply);
        if (json_object_object_get_ex(cli->reply, "intact", &v) && json_object_get_boolean(v)) {
                if (!cli->json)
                        printf("audit log intact: %s records\n", str(cli->reply, "records"));
                return 0;
        }
        if (!cli->json)
                printf("audit log BROKEN at record %s: %s\n", str(cli->reply, "broken_at"),
                       str(cli->reply, "reason"));
        return 1;
}

/* tether-mp audit export: the records as JSON lines, oldest first. */
static int cmd_audit_export(struct cli *cli) {
        json_object *arr;

        if (request(cli, "GET", "/v1/audit", NULL, 300) < 0)
                return 1;
        if (!json_object_object_get_ex(cli->reply, "records", &arr))
                return 1;
        for (size_t i = 0; i < json_object_array_length(arr); i++)
                printf("%s\n", json_object_to_json_string_ext(json_object_array_get_idx(arr, i),
                                                              JSON_C_TO_STRING_PLAIN |
                                                                      JSON_C_TO_STRING_NOSLASHESCAPE));
        return 0;
}

static const char *command_usage(const char *cmd) {
        if (!strcmp(cmd, "devices"))
                return "[--json]\n\nLists devices: ClientID, hostname, status (approved|pending|rejected),\n"
                       "online/offline, last seen, address, key fingerprint, and the kinds of its\n"
                       "recorded conflicts (key, duplicate-identity) or -.";
        if (!strcmp(cmd, "approve"))
                return "CLIENTID\n\nApproves a device; an online pending device is told at once.";
        if (!strcmp(cmd, "reject"))
                return "CLIENTID\n\nRejects a device; an online device is told and disconnected.";
        if (!strcmp(cmd, "conflicts"))
                return "[--json]\n\nLists recorded conflicts: kind \"key\", a ClientID that signed in with "
                       "a key\n"
                       "other than the bound one; kind \"duplicate-identity\", two devices that share\n"
                       "one ClientID and key (both places are shown).";
        if (!strcmp(cmd, "push"))
                return "--type T [--param P] [--expires SECONDS] (--all | CLIENTID...) [--json]\n\n"
                       "T: 1|2|3|machine-policy|user-policy|app-evaluation. --all targets every\n"
                       "approved device online now. Prints 'PushID: N TaskGUID: G'.";
        if (!strcmp(cmd, "push-status"))
                return "PUSHID [--wait SECONDS] [--json]\n\nPer device: state "
                       "(pending|delivered|acknowledged|"
                       "answered|expired),\nReturnCode, Detail and the signed BgbResponseMessage. --wait "
                       "blocks\n"
                       "until every target is answered or expired (exit 3 on time-out).";
        if (!strcmp(cmd, "responses"))
                return "[--limit N] [--json]\n\nRecent responses, newest first, with the raw signed XML.";
        if (!strcmp(cmd, "status"))
                return "[--json]\n\nConnections held, online sessions, ports, approval mode.";
        if (!strcmp(cmd, "site-key-status"))
                return "[--json]\n\n(tether-mp site-key status) The site key chain: serial, fingerprint,\n"
                       "NotBefore, which key signs now, and how many devices confirmed each key.";
        if (!strcmp(cmd, "site-key-rotate"))
                return "[--not-before YYYY-MM-DDTHH:MM:SSZ] [--json]\n\n(tether-mp site-key rotate) Makes "
                       "the next site key,\nendorses it with the newest one, and sends the chain to every "
                       "agent;\nfrom NotBefore (default now) the new key signs. At most 90 days ahead.";
        if (!strcmp(cmd, "key-events"))
                return "[--json]\n\nDevice key rotations and refused rollovers, newest first.";
        if (!strcmp(cmd, "user"))
                return "add NAME --role ROLE [--collection NAME] [--password-stdin] [--json]\n\n"
                       "Adds a console account holding ROLE (full-administrator, operator, approver,\n"
                       "read-only-analyst or a custom role) on a collection (default \"All devices\").\n"
                       "Prints a one-time password, or takes the password from standard input.";
        if (!strcmp(cmd, "audit"))
                return "verify [--json] | export\n\n"
                       "verify walks the console's hash-chained audit log: 'intact' (exit 0),\n"
                       "or the first record that breaks the chain and why (exit 1). export prints\n"
                       "every record as one JSON line, oldest first.";
        return NULL;
}

int mp_cli_main(const char *cmd, int argc, char **argv) {
        enum {
                ARG_SOCKET = 0x100,
                ARG_STATE,
                ARG_JSON,
                ARG_TYPE,
                ARG_PARAM,
                ARG_EXPIRES,
                ARG_ALL,
                ARG_WAIT,
                ARG_LIMIT,
                ARG_NOT_BEFORE,
                ARG_ROLE,
                ARG_COLLECTION,
                ARG_PW_STDIN,
        };
        static const struct option opts[] = {
                {"help", no_argument, NULL, 'h'},
                {"admin-socket", required_argument, NULL, ARG_SOCKET},
                {"state-dir", required_argument, NULL, ARG_STATE},
                {"json", no_argument, NULL, ARG_JSON},
                {"type", required_argument, NULL, ARG_TYPE},
                {"param", required_argument, NULL, ARG_PARAM},
                {"expires", required_argument, NULL, ARG_EXPIRES},
                {"all", no_argument, NULL, ARG_ALL},
                {"wait", required_argument, NULL, ARG_WAIT},
                {"limit", required_argument, NULL, ARG_LIMIT},
                {"not-before", required_argument, NULL, ARG_NOT_BEFORE},
                {"role", required_argument, NULL, ARG_ROLE},
                {"collection", required_argument, NULL, ARG_COLLECTION},
                {"password-stdin", no_argument, NULL, ARG_PW_STDIN},
                {},
        };
        struct cli cli = {0};
        const char *usage_text = command_usage(cmd);
        const char *param = NULL, *not_before = NULL, *role = NULL, *collection = NULL;
        bool pw_stdin = false;
        uint32_t type = 0;
        uint64_t expires = 0, wait = 0, limit = 20;
        bool all = false, have_type = false;
        int c, ret = 2;

        if (!usage_text) {
                fprintf(stderr, "tether-mp: unknown command '%s'; see 'tether-mp --help'\n", cmd);
                return 2;
        }
        strscpy(cli.socket, sizeof(cli.socket), getenv("TETHER_MP_ADMIN_SOCKET") ?: DEFAULT_SOCKET);
        optind = 1;
        while ((c = getopt_long(argc, argv, "h", opts, NULL)) >= 0) {
                switch (c) {
                case 'h':
                        return usage(cmd, usage_text);
                case ARG_SOCKET:
                        strscpy(cli.socket, sizeof(cli.socket), optarg);
                        break;
                case ARG_STATE:
                        snprintf(cli.socket, sizeof(cli.socket), "%s/admin.sock", optarg);
                        break;
                case ARG_JSON:
                        cli.json = true;
                        break;
                case ARG_TYPE:
                        if (parse_task_type(optarg, &type) < 0) {
                                fprintf(stderr, "tether-mp: bad --type '%s'\n", optarg);
                                return 2;
                        }
                        have_type = true;
                        break;
                case ARG_PARAM:
                        param = optarg;
                        break;
                case ARG_EXPIRES:
                        if (parse_u64(optarg, 1, 30 * 86400, &expires) < 0) {
                                fprintf(stderr, "tether-mp: bad --expires '%s'\n", optarg);
                                return 2;
                        }
                        break;
                case ARG_ALL:
                        all = true;
                        break;
                case ARG_WAIT:
                        if (parse_u64(optarg, 0, 86400, &wait) < 0) {
                                fprintf(stderr, "tether-mp: bad --wait '%s'\n", optarg);
                                return 2;
                        }
                        break;
                case ARG_NOT_BEFORE:
                        not_before = optarg;
                        break;
                case ARG_LIMIT:
                        if (parse_u64(optarg, 1, 100000, &limit) < 0) {
                                fprintf(stderr, "tether-mp: bad --limit '%s'\n", optarg);
                                return 2;
                        }
                        break;
                case ARG_ROLE:
                        role = optarg;
                        break;
                case ARG_COLLECTION:
                        collection = optarg;
                        break;
                case ARG_PW_STDIN:
                        pw_stdin = true;
                        break;
                default:
                        return 2;
                }
        }
        int nargs = argc - optind;
        char **args = argv + optind;

        curl_global_init(CURL_GLOBAL_DEFAULT);
        if (!strcmp(cmd, "devices") && nargs == 0)
                ret = cmd_devices(&cli);
        else if ((!strcmp(cmd, "approve") || !strcmp(cmd, "reject")) && nargs == 1)
                ret = cmd_decide(&cli, args[0], cmd);
        else if (!strcmp(cmd, "conflicts") && nargs == 0)
                ret = cmd_conflicts(&cli);
        else if (!strcmp(cmd, "push") && have_type && (all ? nargs == 0 : nargs > 0))
                ret = cmd_push(&cli, type, param, (uint32_t)expires, all, args, nargs);
        else if (!strcmp(cmd, "push-status") && nargs == 1)
                ret = cmd_push_status(&cli, args[0], wait);
        else if (!strcmp(cmd, "responses") && nargs == 0)
                ret = cmd_responses(&cli, limit);
        else if (!strcmp(cmd, "status") && nargs == 0)
                ret = cmd_status(&cli);
        else if ((!strcmp(cmd, "site-key-status") || !strcmp(cmd, "site-key-rotate")) && nargs == 0)
                ret = cmd_site_key(&cli, !strcmp(cmd, "site-key-rotate"), not_before);
        else if (!strcmp(cmd, "key-events") && nargs == 0)
                ret = cmd_key_events(&cli);
        else if (!strcmp(cmd, "user") && nargs == 2 && !strcmp(args[0], "add") && role)
                ret = cmd_user_add(&cli, args[1], role, collection, pw_stdin);
        else if (!strcmp(cmd, "audit") && nargs == 1 && !strcmp(args[0], "verify"))
                ret = cmd_audit_verify(&cli);
        else if (!strcmp(cmd, "audit") && nargs == 1 && !strcmp(args[0], "export"))
                ret = cmd_audit_export(&cli);
        else
                fprintf(stderr, "Usage: tether-mp %s %.*s\n", cmd, (int)strcspn(usage_text, "\n"),
                        usage_text);
        cli_done(&cli);
        curl_global_cleanup();
        return ret;
}
