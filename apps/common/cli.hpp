/* SPDX-License-Identifier: MIT */
/* The one option parser of the command-line tools (getopt_long underneath):
 * `--opt=value` and `--opt value` both work, `--help` prints the usage to
 * stdout and exits 0, and a bad or missing value is reported with the
 * option's name and what it expects (exit 2). Each tool lists its options as
 * a table of cli::Option; the shared ones (the churn workload's) are a table
 * the tools append to theirs. --source is in cli_source.hpp (it needs
 * libmrsync's header; this one needs nothing but libc). */
#ifndef MRSYNC_APPS_CLI_HPP
#define MRSYNC_APPS_CLI_HPP

#include <getopt.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace mrsync::cli {

/** One option. A setter returns nullopt when it took the value, or what the
 *  option expects ("a number from 1 to 64"), which parse() prints next to the
 *  option's name and the value given. */
struct Option {
	const char *name;  /**< without the leading "--" */
	const char *value; /**< placeholder in the usage ("N"), nullptr for a flag */
	const char *help;  /**< one line in the usage */
	std::function<std::optional<std::string>(const char *value)> set;
	char short_name = 0; /**< e.g. 'i' for -i; 0 for none */
};

using Options = std::vector<Option>;

/** Parses a count such as "1000000" or "1e6"; nullopt if it is not one. */
inline std::optional<std::uint64_t> count(const std::string &text)
{
	char *end = nullptr;
	const double v = std::strtod(text.c_str(), &end);
	if (text.empty() || !end || *end || v < 0 || v > 1.8e19)
		return std::nullopt;
	return static_cast<std::uint64_t>(v);
}

/** A flag that sets `out` to `to`. */
inline Option flag(const char *name, const char *help, bool &out, bool to = true)
{
	return {name, nullptr, help, [&out, to](const char *) -> std::optional<std::string> {
			out = to;
			return std::nullopt;
		}};
}

/** A count in [lo, hi] stored in `out` (any integer type). */
template <typename T>
Option number(const char *name, const char *help, T &out, std::uint64_t lo, std::uint64_t hi)
{
	return {name, "N", help, [&out, lo, hi](const char *v) -> std::optional<std::string> {
			const auto n = count(v);
			if (!n || *n < lo || *n > hi)
				return "a number from " + std::to_string(lo) + " to " +
				       std::to_string(hi);
			out = static_cast<T>(*n);
			return std::nullopt;
		}};
}

/** A real number > 0 (seconds) stored in `out`. */
inline Option positive(const char *name, const char *placeholder, const char *help, double &out)
{
	return {name, placeholder, help, [&out](const char *v) -> std::optional<std::string> {
			char *end = nullptr;
			const double d = std::strtod(v, &end);
			if (!*v || *end || !(d > 0))
				return std::string("a number > 0");
			out = d;
			return std::nullopt;
		}};
}

/** How a tool introduces itself in --help and in its errors. */
struct Usage {
	const char *prog;               /**< "mrsync-bench" */
	const char *synopsis;           /**< "[options]" */
	const char *footer = nullptr;   /**< text after the option list */
};

inline void print_usage(std::FILE *to, const Usage &u, const Options &opts)
{
	std::fprintf(to, "usage: %s %s\n", u.prog, u.synopsis);
	for (const Option &o : opts) {
		std::string left = o.short_name ? std::string("-") + o.short_name + ", " : "";
		left += std::string("--") + o.name + (o.value ? std::string(" ") + o.value : "");
		std::fprintf(to, "  %-22s %s\n", left.c_str(), o.help);
	}
	std::fprintf(to, "  %-22s %s\n", "-h, --help", "this text");
	if (u.footer)
		std::fputs(u.footer, to);
}

/**
 * Parses argv[1..argc) against `opts` with getopt_long (state reset first, so
 * a caller after rte_eal_init may parse the rest).
 * @return nullopt to go on; 0 after --help (usage on stdout); 2 after an
 *         unknown option, a missing value or a value its setter refused (one
 *         line on stderr naming the option and the value, then the usage).
 */
inline std::optional<int> parse(const Usage &u, const Options &opts, int argc, char **argv)
{
	constexpr int kFirst = 256; /* getopt's val of opts[k] is kFirst + k */
	std::vector<struct option> table;
	std::string shorts = "+:h"; /* '+': stop at a non-option, ':': report a missing value */
	for (std::size_t k = 0; k < opts.size(); ++k) {
		table.push_back({opts[k].name, opts[k].value ? required_argument : no_argument,
				 nullptr, kFirst + int(k)});
		if (opts[k].short_name)
			shorts += std::string(1, opts[k].short_name) + (opts[k].value ? ":" : "");
	}
	table.push_back({"help", no_argument, nullptr, 'h'});
	table.push_back({nullptr, 0, nullptr, 0});
	const auto fail = [&](const std::string &what) {
		std::fprintf(stderr, "%s: %s\n", u.prog, what.c_str());
		print_usage(stderr, u, opts);
		return 2;
	};
	const auto index_of = [&](int c) -> int {
		if (c >= kFirst)
			return c - kFirst;
		for (std::size_t k = 0; k < opts.size(); ++k)
			if (opts[k].short_name && opts[k].short_name == c)
				return int(k);
		return -1;
	};
	optind = 0; /* glibc: a full re-initialisation (the EAL used getopt before us) */
	opterr = 0;
	for (int c; (c = getopt_long(argc, argv, shorts.c_str(), table.data(), nullptr)) != -1;) {
		if (c == 'h') {
			print_usage(stdout, u, opts);
			return 0;
		}
		if (c == '?')
			return fail(std::string("unknown option '") + argv[optind - 1] + "'");
		if (c == ':') {
			const int k = index_of(optopt);
			return fail(std::string("--") + (k >= 0 ? opts[k].name : "?") +
				    " needs a value");
		}
		const Option &o = opts[index_of(c)];
		/* "--stats-period --nb-cores 2": the next option is not a value */
		if (o.value && std::strncmp(optarg, "--", 2) == 0)
			return fail(std::string("--") + o.name + " needs a value (got the option '" +
				    optarg + "')");
		if (auto expected = o.set(optarg))
			return fail(std::string("--") + o.name + (o.value ? "=" : "") +
				    (o.value ? optarg : "") + ": expected " + *expected);
	}
	if (optind < argc)
		return fail(std::string("unexpected argument '") + argv[optind] + "'");
	return std::nullopt;
}

} // namespace mrsync::cli

#endif
