/* AMX tiles: the kernel's permission and the tile configuration the GEMMs on tiles share
 * (wb_gemm_amx.h: bfloat16; wb_gemm_q8.h: int8).  Permission is asked once a process
 * (wba_permit: Linux 5.16 and up); each thread loads the configuration at the start of a block
 * run and releases the tiles at its end, so no thread keeps the tile state between jobs. */
#ifndef WB_AMX_H
#define WB_AMX_H

#include <stdint.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <immintrin.h>

/* Palette 1: eight tiles of up to 16 rows of 64 bytes. */
typedef struct {
    uint8_t palette, start_row;
    uint8_t reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} wba_tilecfg;

/* Ask Linux for the AMX tile data state (ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA); 1 if granted. */
static int wba_permit(void) {
    return syscall(SYS_arch_prctl, 0x1023, 18) == 0;
}

/* Every tile 16 rows of 64 bytes. */
static inline void wba_configure(void) {
    wba_tilecfg cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.palette = 1;
    for (int t = 0; t < 8; t++) {
        cfg.rows[t] = 16;
        cfg.colsb[t] = 64;
    }
    _tile_loadconfig(&cfg);
}

/* C tiles 0 and 1 (2 and 3: the second A tile's rows; 1 and 3: only where ``wide``) into the
 * staging tile, 32 four-byte sums (float32 or int32) a row. */
static inline void wba_store(void* stage, int two, int wide) {
    char* s = (char*)stage;
    _tile_stored(0, s, 128);
    if (wide)
        _tile_stored(1, s + 64, 128);
    if (two) {
        _tile_stored(2, s + 16 * 128, 128);
        if (wide)
            _tile_stored(3, s + 16 * 128 + 64, 128);
    }
}

#endif
