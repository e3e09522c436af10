/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tetherctl: asks the running tetherd (its channel process, over the control
 * socket) for its status, recent tasks and identity, and triggers cycles.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "agent/config.h"
#include "agent/control.h"
#include "common/fsutil.h"
#include "common/cleanup.h"

static struct {
        const char *config_path;
        const char *socket_path;
        bool json;
} arg = {.config_path = TETHER_SYSCONFDIR_STR "/tether.conf"};

static void help(void) {
        char names[TETHER_TASK_TYPE_NAMES_MAX];

        tether_task_type_cli_names(names, sizeof(names));
        printf("Usage: tetherctl [OPTIONS] COMMAND\n"
               "\n"
               "Talks to the running tetherd over its control socket (root and the\n"
               "'tether' group only).\n"
               "\n"
               "Commands:\n"
               "  status                     connection state, transport, MP, ClientID,\n"
               "                             site-key fingerprint, queue depths, last error\n"
               "  trigger CYCLE              run a cycle now: one of %s,\n"
               "                             or a schedule ID such as\n"
               "                             %s\n"
               "  tasks                      recent tasks and their return codes\n"
               "  stats                      the agent's own timing of each push, by stage:\n"
               "                             count, median, p99 and max in microseconds\n"
               "  identity show              the ClientID and device key fingerprint\n"
               "  identity reset             make a new device identity (new ClientID and key)\n"
               "  identity rotate            a new device key for the same ClientID; the old\n"
               "                             key proves it to the MP, and is destroyed once\n"
               "                             the MP confirms\n"
               "\n"
               "Options:\n"
               "  -s, --socket PATH          control socket (default: <runtime_dir>/tetherd.sock\n"
               "                             from the configuration)\n"
               "  -c, --config FILE          tetherd's configuration (default %s)\n"
               "      --json                 print the raw JSON answer\n"
               "  -h, --help                 show this help\n",
               names, tether_task_type_schedule_id(TETHER_TASK_MACHINE_POLICY),
               TETHER_SYSCONFDIR_STR "/tether.conf");
}

static const char *str(struct json_object *o, const char *key) {
        struct json_object *v;
        if (!json_object_object_get_ex(o, key, &v))
                return "";
        return json_object_get_string(v);
}

static int64_t num(struct json_object *o, const char *key) {
        struct json_object *v;
        if (!json_object_object_get_ex(o, key, &v))
                return 0;
        return json_object_get_int64(v);
}

/* The users with an active session: whom a user-policy cycle runs for. */
static void print_users(struct json_object *o) {
        struct json_object *arr;
        size_t n;

        if (!json_object_object_get_ex(o, "users", &arr) || !json_object_is_type(arr, json_type_array))
                return;
        n = json_object_array_length(arr);
        printf("Users:               ");
        for (size_t i = 0; i < n; i++)
                printf("%s%s", i ? ", " : "", json_object_get_string(json_object_array_get_idx(arr, i)));
        printf("%s\n", n ? "" : "(no active sessions)");
}

/* The trusted site keys with their serials (section 7.2). */
static void print_site_keys(struct json_object *o) {
        struct json_object *arr;

        if (!json_object_object_get_ex(o, "site_keys", &arr) || !json_object_is_type(arr, json_type_array))
                return;
        for (size_t i = 0; i < json_object_array_length(arr); i++) {
                struct json_object *k = json_object_array_get_idx(arr, i);
                printf("  serial %-4lld       %s %s%s%s\n", (long long)num(k, "serial"),
                       str(k, "fingerprint"), str(k, "state"), str(k, "not_before")[0] ? ", from " : "",
                       str(k, "not_before"));
        }
}

static void print_status(struct json_object *o) {
        struct json_object *v;

        printf("State:               %s\n", str(o, "state"));
        printf("Transport:           %s (mode %s)\n", str(o, "transport")[0] ? str(o, "transport") : "-",
               str(o, "transport_mode"));
        printf("MP:                  %s\n", str(o, "mp"));
        printf("ClientID:            %s\n", str(o, "client_id"));
        printf("Site key:            %s\n", str(o, "site_key_fingerprint"));
        print_site_keys(o);
        if (json_object_object_get_ex(o, "device_key_rollover_pending", &v) && json_object_get_boolean(v))
                printf("Device key:          rotated, waiting for the MP's confirm\n");
        printf("Pending tasks:       %lld\n", (long long)num(o, "pending_tasks"));
        printf("Queued responses:    %lld\n", (long long)num(o, "queued_responses"));
        printf("Remembered tasks:    %lld\n", (long long)num(o, "remembered_tasks"));
        printf("Last error:          %s\n", str(o, "last_error")[0] ? str(o, "last_error") : "-");
        print_users(o);
}

static void print_tasks(struct json_object *o) {
        struct json_object *arr;
        size_t n;

        if (!json_object_object_get_ex(o, "tasks", &arr) || !json_object_is_type(arr, json_type_array))
                return;
        n = json_object_array_length(arr);
        if (n == 0) {
                printf("No tasks.\n");
                return;
        }
        printf("%-20s  %-36s  %6s  %4s  %s\n", "RECEIVED", "TASKGUID", "PUSHID", "TYPE", "RESULT");
        for (size_t i = 0; i < n; i++) {
                struct json_object *t = json_object_array_get_idx(arr, i);
                long long rc = (long long)num(t, "return_code");
                printf("%-20s  %-36s  %6lld  %4lld  %s", str(t, "received"), str(t, "task_guid"),
                       (long long)num(t, "push_id"), (long long)num(t, "task_type"), str(t, "result"));
                if (rc)
                        printf(" (%lld)", rc);
                printf("\n");
        }
}

static void print_stats(struct json_object *o) {
        struct json_object *arr;
        size_t n;

        if (!json_object_object_get_ex(o, "stages", &arr) || !json_object_is_type(arr, json_type_array))
                return;
        n = json_object_array_length(arr);
        printf("%-16s %10s %12s %12s %12s\n", "STAGE", "COUNT", "MEDIAN(us)", "P99(us)", "MAX(us)");
        for (size_t i = 0; i < n; i++) {
                struct json_object *t = json_object_array_get_idx(arr, i);
                printf("%-16s %10lld %12lld %12lld %12lld\n", str(t, "stage"), (long long)num(t, "count"),
                       (long long)num(t, "median_us"), (long long)num(t, "p99_us"),
                       (long long)num(t, "max_us"));
        }
        printf("(figures over the last %lld pushes of each stage)\n", (long long)num(o, "window"));
}

int main(int argc, char **argv) {
        static const struct option options[] = {
                {"socket", required_argument, NULL, 's'},
                {"config", required_argument, NULL, 'c'},
                {"json", no_argument, NULL, 'j'},
                {"help", no_argument, NULL, 'h'},
                {},
        };
        _cleanup_(freep) char *answer = NULL, *line = NULL, *default_sock = NULL;
        struct json_object *o, *ok;
        const char *command, *argument = "";
        int c, r, rc = 0;

        while ((c = getopt_long(argc, argv, "s:c:h", options, NULL)) >= 0) {
                switch (c) {
                case 's':
                        arg.socket_path = optarg;
                        break;
                case 'c':
                        arg.config_path = optarg;
                        break;
                case 'j':
                        arg.json = true;
                        break;
                case 'h':
                        help();
                        return 0;
                default:
                        return 2;
                }
        }
        if (optind >= argc) {
                help();
                return 2;
        }
        command = argv[optind];
        if (optind + 1 < argc)
                argument = argv[optind + 1];
        if (optind + 2 < argc) {
                fprintf(stderr, "tetherctl: too many arguments\n");
                return 2;
        }
        if (strcmp(command, "status") != 0 && strcmp(command, "tasks") != 0 &&
            strcmp(command, "stats") != 0 && strcmp(command, "trigger") != 0 &&
            strcmp(command, "identity") != 0) {
                fprintf(stderr, "tetherctl: unknown command '%s' (see --help)\n", command);
                return 2;
        }
        if (strcmp(command, "trigger") == 0 && !argument[0]) {
                char names[TETHER_TASK_TYPE_NAMES_MAX];
                tether_task_type_cli_names(names, sizeof(names));
                fprintf(stderr, "tetherctl: trigger needs a cycle: %s\n", names);
                return 2;
        }
        if (strcmp(command, "identity") == 0 && strcmp(argument, "show") != 0 &&
            strcmp(argument, "reset") != 0 && strcmp(argument, "rotate") != 0) {
                fprintf(stderr, "tetherctl: identity show|reset|rotate\n");
                return 2;
        }
        if (!arg.socket_path) {
                _cleanup_(tether_config_freep) struct tether_config *cfg = NULL;
                /* Only the runtime directory matters here; other errors are tetherd's business. */
                if (tether_config_load(arg.config_path, &cfg) < 0)
                        return 1;
                default_sock = path_join(cfg->runtime_dir, "tetherd.sock");
                if (!default_sock)
                        return 1;
                arg.socket_path = default_sock;
        }
        if (asprintf(&line, "%s%s%s", command, argument[0] ? " " : "", argument) < 0)
                return 1;
        r = control_request(arg.socket_path, line, &answer);
        if (r < 0) {
                fprintf(stderr, "tetherctl: cannot talk to tetherd at '%s': %s\n", arg.socket_path,
                        strerror(-r));
                return 1;
        }
        o = json_tokener_parse(answer);
        if (!o) {
                fprintf(stderr, "tetherctl: tetherd sent an answer that is not JSON\n");
                return 1;
        }
        if (!json_object_object_get_ex(o, "ok", &ok) || !json_object_get_boolean(ok)) {
                fprintf(stderr, "tetherctl: %s\n", str(o, "error"));
                json_object_put(o);
                return 1;
        }
        if (arg.json)
                printf("%s\n", json_object_to_json_string_ext(o, JSON_C_TO_STRING_PRETTY));
        else if (strcmp(command, "status") == 0)
                print_status(o);
        else if (strcmp(command, "tasks") == 0)
                print_tasks(o);
        else if (strcmp(command, "stats") == 0)
                print_stats(o);
        else if (strcmp(command, "trigger") == 0)
                printf("Triggered %s.\n", str(o, "triggered"));
        else {
                printf("ClientID:            %s\n", str(o, "client_id"));
                printf("Device key:          %s\n", str(o, "device_key_fingerprint"));
                printf("Machine-id SHA-256:  %s\n", str(o, "machine_id_sha256"));
        }
        json_object_put(o);
        return rc;
}
