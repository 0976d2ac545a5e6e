/* SPDX-License-Identifier: MIT */
/* mrpmd's prompt on DPDK's cmdline library:
 *   start | stop | show port stats all | show fwd stats all | show mrsync stats |
 *   clear port stats all | set fwd io|mac|macswap|rxonly|txonly | help | quit */
#include <stdio.h>

#include <cmdline.h>
#include <cmdline_parse.h>
#include <cmdline_parse_string.h>
#include <cmdline_socket.h>
#include <cmdline_rdline.h>

#include "prompt.h"

struct one_word {
	cmdline_fixed_string_t word;
};
struct three_words {
	cmdline_fixed_string_t a, b, c;
};
struct four_words {
	cmdline_fixed_string_t a, b, c, d;
};

static void on_start(void *r, struct cmdline *cl, void *d)
{
	(void)r, (void)cl, (void)d;
	mrpmd_cmd_start();
}
static void on_stop(void *r, struct cmdline *cl, void *d)
{
	(void)r, (void)cl, (void)d;
	mrpmd_cmd_stop();
}
static void on_quit(void *r, struct cmdline *cl, void *d)
{
	(void)r, (void)d;
	mrpmd_cmd_quit();
	cmdline_quit(cl);
}
static void on_help(void *r, struct cmdline *cl, void *d)
{
	(void)r, (void)d;
	cmdline_printf(cl,
		       "  start                               start forwarding\n"
		       "  stop                                stop forwarding, print the stats\n"
		       "  show port stats all                 per-port packets and rates\n"
		       "  show fwd stats all                  forwarded and dropped, since start\n"
		       "  show mrsync stats                   lookups, resyncs, corrupted packets\n"
		       "  clear port stats all                zero the ports' counters\n"
		       "  set fwd io|mac|macswap|rxonly|txonly   forwarding engine (when stopped)\n"
		       "  quit                                stop and exit\n");
}
static void on_show_port(void *r, struct cmdline *cl, void *d)
{
	(void)cl, (void)d;
	/* "show port|fwd stats all" share their tokens but for the second word */
	if (((struct four_words *)r)->b[0] == 'f')
		mrpmd_cmd_show_fwd_stats();
	else
		mrpmd_cmd_show_port_stats();
}
static void on_clear_port(void *r, struct cmdline *cl, void *d)
{
	(void)r, (void)cl, (void)d;
	mrpmd_cmd_clear_port_stats();
}
static void on_show_mrsync(void *r, struct cmdline *cl, void *d)
{
	(void)r, (void)cl, (void)d;
	mrpmd_cmd_show_mrsync_stats();
}
static void on_set_fwd(void *r, struct cmdline *cl, void *d)
{
	(void)cl, (void)d;
	mrpmd_cmd_set_fwd(((struct three_words *)r)->c);
}

#define WORD(name, text) \
	static cmdline_parse_token_string_t name = TOKEN_STRING_INITIALIZER(struct one_word, word, text)

WORD(tok_start, "start");
WORD(tok_stop, "stop");
WORD(tok_quit, "quit");
WORD(tok_help, "help");

static cmdline_parse_token_string_t tok_show4 = TOKEN_STRING_INITIALIZER(struct four_words, a, "show");
static cmdline_parse_token_string_t tok_port = TOKEN_STRING_INITIALIZER(struct four_words, b, "port");
static cmdline_parse_token_string_t tok_port_fwd =
	TOKEN_STRING_INITIALIZER(struct four_words, b, "port#fwd");
static cmdline_parse_token_string_t tok_clear = TOKEN_STRING_INITIALIZER(struct four_words, a, "clear");
static cmdline_parse_token_string_t tok_stats4 = TOKEN_STRING_INITIALIZER(struct four_words, c, "stats");
static cmdline_parse_token_string_t tok_all = TOKEN_STRING_INITIALIZER(struct four_words, d, "all");
static cmdline_parse_token_string_t tok_show3 = TOKEN_STRING_INITIALIZER(struct three_words, a, "show");
static cmdline_parse_token_string_t tok_mrsync = TOKEN_STRING_INITIALIZER(struct three_words, b, "mrsync");
static cmdline_parse_token_string_t tok_stats3 = TOKEN_STRING_INITIALIZER(struct three_words, c, "stats");
static cmdline_parse_token_string_t tok_set = TOKEN_STRING_INITIALIZER(struct three_words, a, "set");
static cmdline_parse_token_string_t tok_fwd = TOKEN_STRING_INITIALIZER(struct three_words, b, "fwd");
static cmdline_parse_token_string_t tok_mode =
	TOKEN_STRING_INITIALIZER(struct three_words, c, "io#mac#macswap#rxonly#txonly");

static cmdline_parse_inst_t cmd_start = {
	.f = on_start, .help_str = "start: start forwarding",
	.tokens = {(void *)&tok_start, NULL}};
static cmdline_parse_inst_t cmd_stop = {
	.f = on_stop, .help_str = "stop: stop forwarding",
	.tokens = {(void *)&tok_stop, NULL}};
static cmdline_parse_inst_t cmd_quit = {
	.f = on_quit, .help_str = "quit: exit",
	.tokens = {(void *)&tok_quit, NULL}};
static cmdline_parse_inst_t cmd_help = {
	.f = on_help, .help_str = "help: list the commands",
	.tokens = {(void *)&tok_help, NULL}};
static cmdline_parse_inst_t cmd_show_port = {
	.f = on_show_port, .help_str = "show port|fwd stats all",
	.tokens = {(void *)&tok_show4, (void *)&tok_port_fwd, (void *)&tok_stats4, (void *)&tok_all,
		   NULL}};
static cmdline_parse_inst_t cmd_clear_port = {
	.f = on_clear_port, .help_str = "clear port stats all",
	.tokens = {(void *)&tok_clear, (void *)&tok_port, (void *)&tok_stats4, (void *)&tok_all,
		   NULL}};
static cmdline_parse_inst_t cmd_show_mrsync = {
	.f = on_show_mrsync, .help_str = "show mrsync stats",
	.tokens = {(void *)&tok_show3, (void *)&tok_mrsync, (void *)&tok_stats3, NULL}};
static cmdline_parse_inst_t cmd_set_fwd = {
	.f = on_set_fwd, .help_str = "set fwd io|mac|macswap|rxonly|txonly",
	.tokens = {(void *)&tok_set, (void *)&tok_fwd, (void *)&tok_mode, NULL}};

static cmdline_parse_ctx_t commands[] = {
	&cmd_start, &cmd_stop, &cmd_quit, &cmd_help, &cmd_show_port, &cmd_show_mrsync,
	&cmd_clear_port, &cmd_set_fwd, NULL,
};

void mrpmd_prompt_run(void)
{
	struct cmdline *cl = cmdline_stdin_new(commands, "mrpmd> ");
	if (!cl) {
		fprintf(stderr, "mrpmd: cannot start the prompt\n");
		return;
	}
	cmdline_interact(cl); /* returns at quit or end of input */
	cmdline_stdin_exit(cl);
}
