/* SPDX-License-Identifier: MIT */
/* The interactive prompt (prompt.c, DPDK's cmdline library, written in C
 * because its command tables are C initialisers) and the commands it calls,
 * implemented by the C++ side (main.cpp). */
#ifndef MRPMD_PROMPT_H
#define MRPMD_PROMPT_H

#ifdef __cplusplus
extern "C" {
#endif

/** Reads commands from stdin until `quit` or end of input. */
void mrpmd_prompt_run(void);

void mrpmd_cmd_start(void);
void mrpmd_cmd_stop(void);
void mrpmd_cmd_show_port_stats(void);
void mrpmd_cmd_show_mrsync_stats(void);
void mrpmd_cmd_show_fwd_stats(void);
void mrpmd_cmd_clear_port_stats(void);
/** @return 0, or -1 for an unknown mode or while forwarding (already reported). */
int mrpmd_cmd_set_fwd(const char *mode);
void mrpmd_cmd_quit(void);

#ifdef __cplusplus
}
#endif

#endif
