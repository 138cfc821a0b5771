//! Exits with the code given as its first argument (default 0), after saying so on stderr.
use skiff_guest as task;

fn main() {
    let code = match task::args().first().map(|a| a.parse::<i32>()) {
        None => 0,
        Some(Ok(code)) => code,
        Some(Err(err)) => {
            task::error(&format!("the argument must be an exit code: {err}"));
            task::exit(2);
        }
    };
    task::info(&format!("exiting with {code}"));
    task::exit(code);
}
