/* tester: checks another module's exported functions against a table of
 * cases, running the module through coditect.run_module (a fresh sandboxed
 * instance per case, with the task's limits, its fuel taken from ours).
 *
 * Cases come from /input/input.txt, one per line:
 *   module math.wat          # module under test, relative to /input (default module.wasm)
 *   add 2 3 = 5              # function, integer arguments, "=", expected integer result
 *   fib 10 = 55
 * Blank lines and lines starting with '#' are ignored.
 *
 * Report (stdout and /output/report.json):
 *   {"module": "...", "passed": N, "failed": N, "cases": [{"line": L, "function": "add",
 *    "args": [2, 3], "expected": 5, "actual": 5, "status": "ok", "pass": true}, ...]}
 * "actual" is null unless the call returned. Exit code 0 when every case
 * passed, 1 when any failed, 2 when the case table or module is unusable. */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "coditect.h"
#include "jsonbuf.h"

#define MAX_ARGS 16

static const char *status_name(int status) {
    switch (status) {
    case 0: return "ok";
    case 1: return "invalid_module";
    case 2: return "bad_call";
    case 3: return "trapped";
    case 4: return "out_of_fuel";
    case 5: return "timed_out";
    case 6: return "memory_limit";
    case 7: return "cancelled";
    case -1: return "not_granted";
    default: return "unknown";
    }
}

static int parse_int(const char *token, long long *value) {
    char *end;
    errno = 0;
    *value = strtoll(token, &end, 0);
    return errno == 0 && end != token && *end == '\0';
}

int main(void) {
    size_t size;
    char *table = read_file("/input/input.txt", &size);
    if (!table) {
        fputs("tester: /input/input.txt (the case table) is missing\n", stderr);
        return 2;
    }
    char module_path[1024] = "/input/module.wasm";
    /* First pass: the module line. */
    for (char *line = table; line && *line;) {
        char *next = strchr(line, '\n');
        size_t n = next ? (size_t)(next - line) : strlen(line);
        if (n > 7 && strncmp(line, "module ", 7) == 0) {
            char name[900];
            size_t m = n - 7 < sizeof name - 1 ? n - 7 : sizeof name - 1;
            memcpy(name, line + 7, m);
            name[m] = '\0';
            while (m > 0 && isspace((unsigned char)name[m - 1])) name[--m] = '\0';
            snprintf(module_path, sizeof module_path, "%s%s", name[0] == '/' ? "" : "/input/", name);
        }
        line = next ? next + 1 : NULL;
    }
    size_t module_len;
    char *module = read_file(module_path, &module_len);
    if (!module) {
        fprintf(stderr, "tester: cannot read module %s\n", module_path);
        return 2;
    }

    Buf cases = {0};
    int passed = 0, failed = 0, line_number = 0;
    for (char *line = table; line && *line;) {
        char *next = strchr(line, '\n');
        if (next) *next = '\0';
        line_number++;
        char *text = line;
        line = next ? next + 1 : NULL;
        while (isspace((unsigned char)*text)) text++;
        if (*text == '\0' || *text == '#' || strncmp(text, "module ", 7) == 0) continue;

        char *tokens[MAX_ARGS + 4];
        int count = 0;
        for (char *tok = strtok(text, " \t\r"); tok && count < MAX_ARGS + 4; tok = strtok(NULL, " \t\r"))
            tokens[count++] = tok;
        int eq = -1;
        for (int i = 0; i < count; i++)
            if (strcmp(tokens[i], "=") == 0) eq = i;
        long long args[MAX_ARGS], expected = 0, actual = 0;
        int nargs = eq - 1, ok = eq >= 1 && eq == count - 2 && nargs <= MAX_ARGS &&
                               parse_int(tokens[count - 1], &expected);
        for (int i = 0; ok && i < nargs; i++) ok = parse_int(tokens[1 + i], &args[i]);

        buf_printf(&cases, "%s{\"line\": %d, ", cases.len ? ", " : "", line_number);
        if (!ok) {
            failed++;
            buf_printf(&cases, "\"status\": \"unparsable_case\", \"pass\": false}");
            continue;
        }
        const char *function = tokens[0];
        int status = coditect_run_module(module, (int)module_len, function, (int)strlen(function),
                                         args, nargs, &actual);
        int pass = status == 0 && actual == expected;
        if (pass) passed++;
        else failed++;
        buf_printf(&cases, "\"function\": ");
        buf_json_string(&cases, function, strlen(function));
        buf_printf(&cases, ", \"args\": [");
        for (int i = 0; i < nargs; i++) buf_printf(&cases, "%s%lld", i ? ", " : "", args[i]);
        buf_printf(&cases, "], \"expected\": %lld, \"actual\": ", expected);
        if (status == 0) buf_printf(&cases, "%lld", actual);
        else buf_printf(&cases, "null");
        buf_printf(&cases, ", \"status\": \"%s\", \"pass\": %s}", status_name(status),
                   pass ? "true" : "false");
        coditect_progress(passed + failed, 0);
    }

    Buf json = {0};
    const char *shown = strncmp(module_path, "/input/", 7) == 0 ? module_path + 7 : module_path;
    buf_printf(&json, "{\"module\": ");
    buf_json_string(&json, shown, strlen(shown));
    buf_printf(&json, ", \"passed\": %d, \"failed\": %d, \"cases\": [%s]}\n", passed, failed,
               cases.len ? cases.data : "");
    if (buf_emit(&json, "/output/report.json") != 0) {
        fputs("tester: cannot write /output/report.json\n", stderr);
        return 2;
    }
    char summary[128];
    int n = snprintf(summary, sizeof summary, "%d passed, %d failed", passed, failed);
    coditect_log(failed ? CODITECT_WARN : CODITECT_INFO, summary, n);
    return failed ? 1 : 0;
}
