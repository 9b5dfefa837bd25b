//! A package index's "simple" API: the files of one project, with their hashes. JSON (PEP 691)
//! when the index speaks it, else the HTML page of PEP 503 (Artifactory, Nexus and devpi
//! mirrors often do only that). Used only for a hashed requirements file, whose lines name
//! versions and hashes but not where the files are; a loose file is resolved by uv.

use super::PackagesError;
use super::target::normalize;
use reqwest::blocking::Client;
use serde::Deserialize;
use url::Url;

pub const PYPI_SIMPLE: &str = "https://pypi.org/simple";

/// A file the index lists for a project.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexFile {
    pub filename: String,
    pub url: String,
    pub sha256: Option<String>,
}

#[derive(Deserialize)]
struct JsonPage {
    files: Vec<JsonFile>,
}

#[derive(Deserialize)]
struct JsonFile {
    filename: String,
    url: String,
    #[serde(default)]
    hashes: std::collections::BTreeMap<String, String>,
}

/// The files `index` (a simple-API root such as `https://pypi.org/simple`) lists for `project`.
pub fn project_files(
    client: &Client,
    index: &str,
    project: &str,
) -> Result<Vec<IndexFile>, PackagesError> {
    let page = format!("{}/{}/", index.trim_end_matches('/'), normalize(project));
    let failed = |problem: String| PackagesError::Index {
        url: redact(&page),
        problem,
    };
    let response = client
        .get(&page)
        .header(
            reqwest::header::ACCEPT,
            "application/vnd.pypi.simple.v1+json, text/html;q=0.1",
        )
        .send()
        .map_err(|e| failed(crate::remote::error_chain(&e)))?;
    if response.status() == reqwest::StatusCode::NOT_FOUND {
        return Ok(Vec::new());
    }
    if !response.status().is_success() {
        return Err(failed(format!("the index answered {}", response.status())));
    }
    let base = response.url().clone();
    let json = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("json"));
    let body = response.text().map_err(|e| failed(e.to_string()))?;
    if json {
        let page: JsonPage =
            serde_json::from_str(&body).map_err(|e| failed(format!("not PEP 691 JSON: {e}")))?;
        Ok(page
            .files
            .into_iter()
            .filter_map(|f| {
                Some(IndexFile {
                    url: base.join(&f.url).ok()?.to_string(),
                    sha256: f.hashes.get("sha256").map(|h| h.to_ascii_lowercase()),
                    filename: f.filename,
                })
            })
            .collect())
    } else {
        Ok(html_links(&body, &base))
    }
}

/// The anchors of a PEP 503 page: the text is the file name, the href's fragment the hash.
fn html_links(body: &str, base: &Url) -> Vec<IndexFile> {
    let mut files = Vec::new();
    let lower = body.to_ascii_lowercase();
    let mut at = 0;
    while let Some(start) = lower[at..].find("<a ").map(|i| at + i) {
        let Some(tag_end) = lower[start..].find('>').map(|i| start + i) else {
            break;
        };
        let Some(close) = lower[tag_end..].find("</a>").map(|i| tag_end + i) else {
            break;
        };
        at = close;
        let Some(href) = attribute(&body[start..tag_end], "href") else {
            continue;
        };
        let href = href.replace("&amp;", "&");
        let Ok(url) = base.join(&href) else {
            continue;
        };
        let sha256 = url
            .fragment()
            .and_then(|f| f.strip_prefix("sha256="))
            .map(|h| h.to_ascii_lowercase());
        let mut url = url.clone();
        url.set_fragment(None);
        files.push(IndexFile {
            filename: body[tag_end + 1..close].trim().to_string(),
            url: url.to_string(),
            sha256,
        });
    }
    files
}

fn attribute(tag: &str, name: &str) -> Option<String> {
    let lower = tag.to_ascii_lowercase();
    let at = lower.find(&format!("{name}="))? + name.len() + 1;
    let rest = &tag[at..];
    let quote = rest.chars().next()?;
    if quote == '"' || quote == '\'' {
        rest[1..].split(quote).next().map(str::to_string)
    } else {
        rest.split(|c: char| c.is_whitespace() || c == '>')
            .next()
            .map(str::to_string)
    }
}

/// A URL for messages (an index's, a catalogue's): without the password it may carry.
pub fn redact(url: &str) -> String {
    match Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pep_503_page_gives_names_urls_and_hashes() {
        let base = Url::parse("https://mirror.example/simple/numpy/").unwrap();
        let page = r#"<html><body><h1>Links for numpy</h1>
<a href="../../packages/numpy-2.4.6-cp311-cp311-manylinux_2_28_x86_64.whl#sha256=89CD" data-requires-python="&gt;=3.11">numpy-2.4.6-cp311-cp311-manylinux_2_28_x86_64.whl</a><br/>
<A HREF='https://files.example/numpy-2.4.6.tar.gz'>numpy-2.4.6.tar.gz</A>
</body></html>"#;
        assert_eq!(
            html_links(page, &base),
            [
                IndexFile {
                    filename: "numpy-2.4.6-cp311-cp311-manylinux_2_28_x86_64.whl".into(),
                    url: "https://mirror.example/packages/numpy-2.4.6-cp311-cp311-manylinux_2_28_x86_64.whl".into(),
                    sha256: Some("89cd".into()),
                },
                IndexFile {
                    filename: "numpy-2.4.6.tar.gz".into(),
                    url: "https://files.example/numpy-2.4.6.tar.gz".into(),
                    sha256: None,
                },
            ]
        );
        assert_eq!(
            redact("https://ci:secret@mirror.example/simple"),
            "https://ci:***@mirror.example/simple"
        );
    }
}
