/* analyzer: reads every file under /input and reports counts as JSON on
 * stdout and in /output/report.json:
 *   {"files": N, "lines": N, "functions": N, "todos": N,
 *    "per_file": [{"path": "...", "lines": N, "functions": N, "todos": N}, ...]}
 * `per_file` is sorted by path (relative to /input).
 *
 * Counting rules (simple and documented, not a parser):
 * - lines: newline characters, plus one for a last line without a newline;
 * - todos: occurrences of the text "TODO";
 * - functions: lines that, after indentation and the modifiers `pub`,
 *   `pub(crate)`, `async`, `export`, `static`, `unsafe`, `const`, start with
 *   `fn ` (Rust), `def ` (Python), `function ` (JavaScript) or `func ` (Go);
 *   or, for C-like code, lines at column 0 that start with an identifier,
 *   contain `(`, contain no `;` or `=`, end with `)` or `{`, and do not
 *   start with a control keyword.
 * Progress goes through coditect.progress, one summary line through coditect.log. */
#include <ctype.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "coditect.h"
#include "jsonbuf.h"

typedef struct {
    char *path;
    long lines, functions, todos;
} FileStats;

static FileStats *files;
static size_t file_count, file_cap;

static void add_file(char *path) {
    if (file_count == file_cap) {
        file_cap = file_cap ? file_cap * 2 : 64;
        files = realloc(files, file_cap * sizeof *files);
        if (!files) exit(3);
    }
    files[file_count++] = (FileStats){.path = path};
}

static void walk(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *entry;
    while ((entry = readdir(d)) != NULL) {
        if (!strcmp(entry->d_name, ".") || !strcmp(entry->d_name, "..")) continue;
        size_t n = strlen(dir) + strlen(entry->d_name) + 2;
        char *path = malloc(n);
        if (!path) exit(3);
        snprintf(path, n, "%s/%s", dir, entry->d_name);
        struct stat st;
        if (stat(path, &st) != 0) {
            free(path);
        } else if (S_ISDIR(st.st_mode)) {
            walk(path);
            free(path);
        } else if (S_ISREG(st.st_mode)) {
            add_file(path);
        } else {
            free(path);
        }
    }
    closedir(d);
}

static int starts_with(const char *s, size_t n, const char *prefix) {
    size_t p = strlen(prefix);
    return n >= p && memcmp(s, prefix, p) == 0;
}

static int is_function_line(const char *line, size_t len) {
    size_t indent = 0;
    while (indent < len && (line[indent] == ' ' || line[indent] == '\t')) indent++;
    const char *s = line + indent;
    size_t n = len - indent;
    static const char *modifiers[] = {"pub(crate) ", "pub ", "async ", "export ", "static ",
                                      "unsafe ", "const ", NULL};
    for (int again = 1; again;) {
        again = 0;
        for (int i = 0; modifiers[i]; i++) {
            if (starts_with(s, n, modifiers[i])) {
                size_t m = strlen(modifiers[i]);
                s += m;
                n -= m;
                again = 1;
            }
        }
    }
    if (starts_with(s, n, "fn ") || starts_with(s, n, "def ") || starts_with(s, n, "function ") ||
        starts_with(s, n, "func "))
        return 1;
    if (indent != 0 || n == 0 || !(isalpha((unsigned char)s[0]) || s[0] == '_')) return 0;
    static const char *keywords[] = {"if", "for", "while", "switch", "return", "else", "do",
                                     "typedef", "struct", "enum", "union", "case", NULL};
    size_t word = 0;
    while (word < n && (isalnum((unsigned char)s[word]) || s[word] == '_')) word++;
    for (int i = 0; keywords[i]; i++)
        if (strlen(keywords[i]) == word && memcmp(s, keywords[i], word) == 0) return 0;
    if (!memchr(s, '(', n) || memchr(s, ';', n) || memchr(s, '=', n)) return 0;
    size_t end = n;
    while (end > 0 && isspace((unsigned char)s[end - 1])) end--;
    return end > 0 && (s[end - 1] == ')' || s[end - 1] == '{');
}

static void analyze(FileStats *stats) {
    size_t size = 0;
    char *text = read_file(stats->path, &size);
    if (!text) return;
    size_t start = 0;
    for (size_t i = 0; i <= size; i++) {
        if (i == size || text[i] == '\n') {
            if (i > start || i < size) {
                stats->lines++;
                if (is_function_line(text + start, i - start)) stats->functions++;
            }
            start = i + 1;
        }
    }
    for (char *p = text; (p = strstr(p, "TODO")) != NULL; p += 4) stats->todos++;
    free(text);
}

static int by_path(const void *a, const void *b) {
    return strcmp(((const FileStats *)a)->path, ((const FileStats *)b)->path);
}

int main(void) {
    walk("/input");
    qsort(files, file_count, sizeof *files, by_path);
    long lines = 0, functions = 0, todos = 0;
    for (size_t i = 0; i < file_count; i++) {
        analyze(&files[i]);
        lines += files[i].lines;
        functions += files[i].functions;
        todos += files[i].todos;
        coditect_progress((long long)(i + 1), (long long)file_count);
    }
    Buf json = {0};
    buf_printf(&json, "{\"files\": %zu, \"lines\": %ld, \"functions\": %ld, \"todos\": %ld, \"per_file\": [",
               file_count, lines, functions, todos);
    for (size_t i = 0; i < file_count; i++) {
        const char *relative = files[i].path + strlen("/input/");
        buf_printf(&json, "%s{\"path\": ", i ? ", " : "");
        buf_json_string(&json, relative, strlen(relative));
        buf_printf(&json, ", \"lines\": %ld, \"functions\": %ld, \"todos\": %ld}", files[i].lines,
                   files[i].functions, files[i].todos);
    }
    buf_printf(&json, "]}\n");
    if (buf_emit(&json, "/output/report.json") != 0) {
        fputs("analyzer: cannot write /output/report.json\n", stderr);
        return 1;
    }
    Buf summary = {0};
    buf_printf(&summary, "analyzed %zu files: %ld lines, %ld functions, %ld TODO markers", file_count,
               lines, functions, todos);
    coditect_log(CODITECT_INFO, summary.data, (int)summary.len);
    return 0;
}
