//! Sessions: a user's list, ending all of a user's, ending one by its `sid`.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Extension, Path, State};
use axum::http::StatusCode;
use serde_json::{Value, json};

use super::{Admin, AdminError, Answer, commit, load_user};
use crate::http::AppState;
use crate::store::{Session, Write};

fn view(session: &Session) -> Value {
    // The key is a credential's hash; the sid is the public id tokens carry.
    json!({
        "sid": session.sid,
        "user": session.user,
        "auth_time": session.auth_time,
        "amr": session.amr,
        "acr": session.acr,
        "flow": session.flow,
        "expires": session.expires,
        "saml_service_providers": session.saml.iter().map(|p| &p.sp).collect::<Vec<_>>(),
    })
}

async fn all(app: &Arc<crate::app::App>) -> Result<Vec<Session>, AdminError> {
    let store = Arc::clone(&app.store);
    crate::http::blocking(move || store.sessions())
        .await
        .map_err(AdminError::internal)?
        .map_err(AdminError::internal)
}

/// `GET /admin/v1/users/{id}/sessions`.
pub async fn of_user(State(app): AppState, Path(id): Path<String>) -> Answer {
    load_user(&app, &id)?;
    let now = crate::app::now();
    let shown: Vec<Value> = all(&app)
        .await?
        .iter()
        .filter(|s| s.user == id && s.expires > now)
        .map(view)
        .collect();
    Ok((StatusCode::OK, Json(json!({ "sessions": shown }))))
}

/// `DELETE /admin/v1/users/{id}/sessions`: every session and refresh token of the user.
pub async fn end_all(
    State(app): AppState,
    Extension(admin): Extension<Arc<Admin>>,
    Path(id): Path<String>,
) -> Answer {
    let user = load_user(&app, &id)?;
    admin.may_manage(&app, &user)?;
    commit(
        &app,
        vec![
            admin.audited("session.end_all", &id, Value::Null),
            Write::EndUserSessions {
                user: id.clone(),
                except: None,
            },
        ],
    )
    .await?;
    Ok((StatusCode::OK, Json(json!({ "ended": id }))))
}

/// `DELETE /admin/v1/sessions/{sid}`.
pub async fn end_one(
    State(app): AppState,
    Extension(admin): Extension<Arc<Admin>>,
    Path(sid): Path<String>,
) -> Answer {
    let session = all(&app)
        .await?
        .into_iter()
        .find(|s| s.sid == sid)
        .ok_or_else(|| AdminError::not_found(format!("no session `{sid}`")))?;
    let user = load_user(&app, &session.user)?;
    admin.may_manage(&app, &user)?;
    commit(
        &app,
        vec![
            admin.audited("session.end", &session.user, json!({ "sid": sid })),
            Write::DeleteSession(session.key),
        ],
    )
    .await?;
    Ok((StatusCode::OK, Json(json!({ "ended": sid }))))
}
