//! What an HTTP run measures: one OpenAI-compatible server (`openai:http://HOST:PORT/v1`), or a fleet of them that
//! requests are spread across.

use super::HttpError;

/// The OpenAI API a run calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Endpoint {
    /// `POST /v1/completions` with a `prompt`.
    #[default]
    Completions,
    /// `POST /v1/chat/completions` with one user message (the server applies its chat template).
    Chat,
}

impl Endpoint {
    pub fn path(self) -> &'static str {
        match self {
            Self::Completions => "/completions",
            Self::Chat => "/chat/completions",
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Completions => "completions",
            Self::Chat => "chat",
        }
    }
}

/// How a fleet picks the server of each request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Balance {
    /// Each server in turn.
    #[default]
    RoundRobin,
    /// The server with the fewest requests in flight (ties: the first), as a router would.
    LeastOutstanding,
}

impl Balance {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RoundRobin => "round-robin",
            Self::LeastOutstanding => "least-outstanding",
        }
    }
}

/// One server: its API base (ending in `/v1`, no trailing slash) and the model name it serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    pub base_url: String,
    pub served_model: String,
}

impl Server {
    /// `openai:http://HOST:PORT/v1` (the `openai:` scheme names the API; the URL is the API base).
    pub fn parse(spec: &str, served_model: &str) -> Result<Self, HttpError> {
        let bad = |why: &str| HttpError::BadTarget { spec: spec.to_owned(), why: why.to_owned() };
        let url = spec.strip_prefix("openai:").ok_or_else(|| bad("expected openai:http://HOST:PORT/v1"))?;
        let parsed = reqwest::Url::parse(url).map_err(|e| bad(&format!("not a URL: {e}")))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(bad("the URL must be http:// or https://"));
        }
        if parsed.host_str().is_none_or(str::is_empty) {
            return Err(bad("the URL has no host"));
        }
        if parsed.query().is_some() || parsed.fragment().is_some() {
            return Err(bad("the URL must not carry a query or fragment"));
        }
        if served_model.trim().is_empty() {
            return Err(bad("--served-model is empty"));
        }
        Ok(Self { base_url: url.trim_end_matches('/').to_owned(), served_model: served_model.to_owned() })
    }

    pub fn url(&self, endpoint: Endpoint) -> String {
        format!("{}{}", self.base_url, endpoint.path())
    }

    /// `openai:URL`, as given.
    pub fn label(&self) -> String {
        format!("openai:{}", self.base_url)
    }
}

/// A row of the comparison: one server, or a named fleet of several.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// `openai:URL` for one server, the fleet's name for a fleet.
    pub name: String,
    pub servers: Vec<Server>,
    pub balance: Balance,
    pub fleet: bool,
}

impl Target {
    pub fn single(server: Server) -> Self {
        Self { name: server.label(), servers: vec![server], balance: Balance::RoundRobin, fleet: false }
    }

    pub fn fleet(name: &str, servers: Vec<Server>, balance: Balance) -> Result<Self, HttpError> {
        if name.trim().is_empty() || name.contains(['/', '\\']) {
            return Err(HttpError::BadFleet(format!("'{name}' is not a fleet name (no slashes, not empty)")));
        }
        if servers.is_empty() {
            return Err(HttpError::BadFleet(format!("fleet '{name}' has no --target")));
        }
        if let Some(s) = servers
            .iter()
            .enumerate()
            .find_map(|(i, s)| servers[..i].iter().any(|o| o.base_url == s.base_url).then_some(s))
        {
            return Err(HttpError::BadFleet(format!("{} is listed twice in fleet '{name}'", s.label())));
        }
        Ok(Self { name: name.to_owned(), servers, balance, fleet: true })
    }
}

/// Pairs `--target` specs with `--served-model` names (one name for all, or one per target).
pub fn servers(targets: &[String], served: &[String]) -> Result<Vec<Server>, HttpError> {
    if targets.is_empty() {
        return Ok(Vec::new());
    }
    let name = |i: usize| match served.len() {
        0 => Err(HttpError::NoServedModel),
        1 => Ok(served[0].as_str()),
        n if n == targets.len() => Ok(served[i].as_str()),
        n => Err(HttpError::ServedModelCount { targets: targets.len(), names: n }),
    };
    targets.iter().enumerate().map(|(i, t)| Server::parse(t, name(i)?)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse_and_name_their_problems() {
        let s = Server::parse("openai:http://127.0.0.1:8000/v1/", "m").unwrap();
        assert_eq!(s.base_url, "http://127.0.0.1:8000/v1");
        assert_eq!(s.url(Endpoint::Chat), "http://127.0.0.1:8000/v1/chat/completions");
        assert_eq!(s.label(), "openai:http://127.0.0.1:8000/v1");
        let err = |spec: &str| Server::parse(spec, "m").unwrap_err().to_string();
        assert!(err("http://x/v1").contains("expected openai:http://HOST:PORT/v1"), "{}", err("http://x/v1"));
        assert!(err("openai:ftp://x/v1").contains("http:// or https://"));
        assert!(err("openai:not a url").contains("not a URL"));
        assert!(err("openai:http://x/v1?a=b").contains("query"));
        assert!(Server::parse("openai:http://x/v1", " ").unwrap_err().to_string().contains("--served-model"));
    }

    #[test]
    fn served_model_names_pair_with_targets() {
        let t = ["openai:http://a/v1".to_owned(), "openai:http://b/v1".to_owned()];
        let one = servers(&t, &["m".into()]).unwrap();
        assert!(one.iter().all(|s| s.served_model == "m"));
        let two = servers(&t, &["x".into(), "y".into()]).unwrap();
        assert_eq!(two[1].served_model, "y");
        assert_eq!(
            servers(&t, &[]).unwrap_err().to_string(),
            "--target needs --served-model (the model name the server serves)"
        );
        assert!(servers(&t, &["a".into(), "b".into(), "c".into()]).unwrap_err().to_string().contains("3 names"));
        assert!(Target::fleet("a/b", one.clone(), Balance::RoundRobin).is_err());
        assert!(Target::fleet("f", Vec::new(), Balance::RoundRobin).is_err());
        let twice = vec![one[0].clone(), one[0].clone()];
        let err = Target::fleet("f", twice, Balance::RoundRobin).unwrap_err().to_string();
        assert_eq!(err, "--fleet: openai:http://a/v1 is listed twice in fleet 'f'");
        assert_eq!(Target::fleet("f", one, Balance::LeastOutstanding).unwrap().servers.len(), 2);
    }
}
