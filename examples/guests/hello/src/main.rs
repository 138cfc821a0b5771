//! The hello guest: greets its arguments, shows a variable from `--env`, and echoes its input.
use skiff_guest as task;

fn main() {
    let args = task::args();
    let who = if args.is_empty() { "world".to_string() } else { args.join(" ") };
    task::output_line(&format!("hello, {who}!"));
    if let Some(greeting) = task::env("GREETING") {
        task::output_line(&format!("GREETING={greeting}"));
    }
    match task::input_string() {
        Ok(input) if !input.is_empty() => task::output_line(&format!("input: {}", input.trim_end())),
        Ok(_) => {}
        Err(err) => task::warn(&format!("could not read input: {err}")),
    }
    task::info(&format!("{} greeted {} argument(s)", task::name(), args.len()));
}
