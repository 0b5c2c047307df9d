// parti.h and parti_nats.h, implementation included, compile as C++
// (g++ and clang++, -Wpedantic -Werror) and work.
#define PARTI_IMPLEMENTATION
#define PARTI_NATS_NO_NATSC
#include "parti.h"
#include "parti_nats.h"

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

    parti_fake_world *w = NULL;
    parti_transport t;
    parti_kv_config kc;
    parti_kv_entry e;
    uint64_t rev = 0;
    std::memset(&kc, 0, sizeof kc);
    kc.bucket = "b";
    if (parti_fake_world_create(&w, NULL) || parti_fake_connect(w, "cpp", &t)) return 3;
    if (t.vt->kv_open(t.self, &kc, 1000) || t.vt->kv_create(t.self, "b", "k", "v", 1, &rev, 1000)) return 4;
    if (t.vt->kv_get(t.self, "b", "k", 0, &e, 1000) || e.revision != rev) return 5;
    parti_kv_entry_free(&e);
    parti_fake_disconnect(&t);
    parti_fake_world_destroy(w);
    std::printf("C++ build: ok\n");
    return 0;
}
