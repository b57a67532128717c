//! `celeriac status ID`: a task's or a workflow's record in the store.

use std::process::ExitCode;

use celeriac_producer::status;
use celeriac_schema::store::Store;
use celeriac_schema::TaskId;

use crate::{Global, UNKNOWN};

/// Shows the task or workflow `id`, as a table or as JSON.
pub async fn run(global: &Global, id: &str, json: bool) -> ExitCode {
    let Ok(task_id) = id.parse::<TaskId>() else {
        eprintln!(
            "error: {id:?} is not a task id (a UUID such as 01890a5d-ac96-774b-bcce-b302099a8057)"
        );
        return ExitCode::from(2);
    };
    let store = match global.store("").await {
        Ok(store) => store,
        Err(code) => return code,
    };
    match store.get(task_id).await {
        Ok(Some(record)) => {
            if json {
                outln!("{:#}", status::to_json(&record));
            } else {
                out!("{}", status::to_table(&record));
            }
            ExitCode::SUCCESS
        }
        Ok(None) => match celeriac_producer::workflow_status(&store, task_id).await {
            Ok(Some(workflow)) => {
                if json {
                    outln!("{:#}", status::workflow_to_json(&workflow));
                } else {
                    out!("{}", status::workflow_to_table(&workflow));
                }
                ExitCode::SUCCESS
            }
            Ok(None) => {
                eprintln!(
                    "error: no task or workflow {task_id} in namespace {:?} of the store at {}: it was never sent with a store, \
                     or its record expired (records live for the result TTL, one day by default)",
                    global.namespace,
                    celeriac_producer::redact_url(&global.redis_url)
                );
                ExitCode::from(UNKNOWN)
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(1)
            }
        },
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}
