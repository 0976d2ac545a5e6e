/* SPDX-License-Identifier: MIT */
/* The report: a readable table, or one JSON object (--json). */
#include <cmath>
#include <cstdio>
#include <string>

#include "bench.hpp"
#include "timing.hpp"

namespace mrsync::bench {

namespace {

std::string json_string(const std::string &s)
{
	std::string out = "\"";
	for (const char c : s) {
		switch (c) {
		case '"': out += "\\\""; break;
		case '\\': out += "\\\\"; break;
		case '\n': out += "\\n"; break;
		case '\t': out += "\\t"; break;
		default:
			if (static_cast<unsigned char>(c) < 0x20) {
				char esc[8];
				std::snprintf(esc, sizeof(esc), "\\u%04x", c);
				out += esc;
			} else {
				out += c;
			}
		}
	}
	return out + "\"";
}

/* Enough digits to compare a 1.6 ns hit with a 1.2 s registration. */
std::string number(double v)
{
	char buf[64];
	if (!std::isfinite(v))
		return "null";
	std::snprintf(buf, sizeof(buf), std::fabs(v) < 100 ? "%.3f" : "%.1f", v);
	return buf;
}

std::string human(double v, const std::string &unit)
{
	char buf[64];
	if (unit == "x")
		std::snprintf(buf, sizeof(buf), "%.2f x", v);
	else if (v >= 1e6)
		std::snprintf(buf, sizeof(buf), "%.2f ms", v / 1e6);
	else if (v >= 1e4)
		std::snprintf(buf, sizeof(buf), "%.2f us", v / 1e3);
	else
		std::snprintf(buf, sizeof(buf), "%.2f ns", v);
	return buf;
}

} // namespace

Report::Figure *Report::find(const std::string &name)
{
	for (auto &f : figures_)
		if (f.name == name)
			return &f;
	return nullptr;
}

void Report::set(const std::string &name, double value, const char *unit, std::string what)
{
	Figure *f = find(name);
	if (!f)
		f = &figures_.emplace_back();
	*f = Figure{name, value, unit, std::move(what), ""};
}

void Report::set(const std::string &name, const Sample &s, std::string what)
{
	set(name, s.median_ns, "ns", std::move(what));
	if (!s.disturbed)
		return;
	disturbed_ += (disturbed_.empty() ? "" : " ") + name + ":" + std::to_string(s.disturbed);
	param("disturbed_batches", disturbed_);
	if (!s.clean)
		note(name + ": " + s.caveat);
}

void Report::skip(const std::string &name, const char *unit, std::string what, std::string why)
{
	Figure *f = find(name);
	if (!f)
		f = &figures_.emplace_back();
	*f = Figure{name, std::nullopt, unit, std::move(what), std::move(why)};
}

void Report::param(const std::string &name, std::string value, bool is_number)
{
	for (auto &p : params_)
		if (p.name == name) {
			p = Param{name, std::move(value), is_number};
			return;
		}
	params_.push_back(Param{name, std::move(value), is_number});
}

std::optional<double> Report::get(const std::string &name) const
{
	for (const auto &f : figures_)
		if (f.name == name)
			return f.value;
	return std::nullopt;
}

bool Report::has(const std::string &name) const
{
	for (const auto &f : figures_)
		if (f.name == name)
			return true;
	return false;
}

void Report::ratio(const std::string &name, const std::string &a, const std::string &b,
		   std::string what)
{
	const auto va = get(a), vb = get(b);
	if (va && vb && *vb > 0)
		set(name, *va / *vb, "x", std::move(what));
	else
		skip(name, "x", std::move(what), a + " or " + b + " was not measured");
}

void Report::target(const std::string &row, std::string bound)
{
	targets_.emplace_back(row, std::move(bound));
}

std::string Report::target_of(const std::string &row) const
{
	for (const auto &[name, bound] : targets_)
		if (name == row)
			return bound;
	return "";
}

void Report::print_table() const
{
	std::printf("%-20s %13s  %s\n", "row", "median", "what");
	for (const auto &f : figures_) {
		const std::string bound = target_of(f.name);
		const std::string target = bound.empty() ? "" : " (target " + bound + ")";
		if (f.value)
			std::printf("%-20s %13s  %s%s\n", f.name.c_str(),
				    human(*f.value, f.unit).c_str(), f.what.c_str(), target.c_str());
		else
			std::printf("%-20s %13s  %s (skipped: %s)\n", f.name.c_str(), "-",
				    f.what.c_str(), f.why.c_str());
	}
	for (const auto &n : notes_)
		std::printf("note: %s\n", n.c_str());
	std::printf("parameters:");
	for (const auto &p : params_)
		std::printf(" %s=%s", p.name.c_str(), p.value.c_str());
	std::printf("\n");
}

void Report::print_json() const
{
	std::string out = "{";
	const char *sep = "";
	for (const auto &f : figures_) {
		out += sep + json_string(f.name) + ": " + (f.value ? number(*f.value) : "null");
		sep = ", ";
	}
	out += std::string(sep) + "\"skipped\": {";
	sep = "";
	for (const auto &f : figures_)
		if (!f.value) {
			out += sep + json_string(f.name) + ": " + json_string(f.why);
			sep = ", ";
		}
	out += "}, \"notes\": [";
	sep = "";
	for (const auto &n : notes_) {
		out += sep + json_string(n);
		sep = ", ";
	}
	out += "], \"targets\": {";
	sep = "";
	for (const auto &[name, bound] : targets_) {
		out += sep + json_string(name) + ": " + json_string(bound);
		sep = ", ";
	}
	out += "}, \"params\": {";
	sep = "";
	for (const auto &p : params_) {
		out += sep + json_string(p.name) + ": " + (p.is_number ? p.value : json_string(p.value));
		sep = ", ";
	}
	out += "}}";
	std::printf("%s\n", out.c_str());
}

} // namespace mrsync::bench
