// The header and its implementation compile as C++ (g++ and clang++, -Wpedantic -Werror).
#define PARTI_IMPLEMENTATION
#include "parti.h"

#include <cstdio>
#include <cstring>

int main() {
    static const char *const keys[] = {"a", "b"};
    parti_partition p = {keys, 2, 1};
    parti_subjects s = {NULL, 0};
    char msg[128];
    if (parti_subjects_build("t.{0}.{1}", &p, 1, 0, &s, msg, sizeof msg) != PARTI_ERR_OK) return 1;
    if (s.count != 1 || std::strcmp(s.items[0], "t.a.b") != 0) return 2;
    parti_subjects_free(&s);
    std::printf("C++ build: ok\n");
    return 0;
}
