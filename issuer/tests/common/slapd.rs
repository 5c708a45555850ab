//! A real OpenLDAP `slapd` (Debian's package, installed by `make setup-test`) on loopback ports chosen at run
//! time: plain LDAP (with StartTLS) and LDAPS, with a development CA, an `mdb` database in a temporary
//! directory, and the directory's administrator for seeding and changing entries. Stopped on drop.
#![allow(dead_code, unreachable_pub)] // shared through `#[path]`: each test binary uses a different part

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ldap3::{LdapConnAsync, LdapConnSettings, Mod};

pub const SUFFIX: &str = "dc=example,dc=org";
pub const ADMIN_DN: &str = "cn=admin,dc=example,dc=org";
pub const ADMIN_PW: &str = "admin-secret";
/// The service account the connector binds as.
pub const SERVICE_DN: &str = "cn=dex,ou=services,dc=example,dc=org";
pub const SERVICE_PW: &str = "dex-secret";

pub struct Slapd {
    pub dir: tempfile::TempDir,
    /// `127.0.0.1:port` of plain LDAP (StartTLS capable).
    pub ldap: String,
    /// `127.0.0.1:port` of LDAPS.
    pub ldaps: String,
    /// The development CA's PEM file.
    pub ca_file: PathBuf,
    child: Option<Child>,
}

fn slapd_binary() -> PathBuf {
    let p = PathBuf::from("/usr/sbin/slapd");
    assert!(
        p.exists(),
        "OpenLDAP slapd is not installed: run `make setup-test` (Debian packages slapd and ldap-utils)"
    );
    p
}

include!("free_port.rs");

impl Slapd {
    /// Configures and starts slapd, waits until it accepts connections, and seeds the base entries.
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ca_file = write_certs(dir.path());
        std::fs::create_dir_all(dir.path().join("data")).unwrap();
        let d = dir.path().display();
        let conf = format!(
            r#"include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
include /etc/ldap/schema/nis.schema
modulepath /usr/lib/ldap
moduleload back_mdb
pidfile {d}/slapd.pid
TLSCACertificateFile {d}/ca.pem
TLSCertificateFile {d}/cert.pem
TLSCertificateKeyFile {d}/key.pem
sizelimit 500
database mdb
maxsize 104857600
suffix "{SUFFIX}"
rootdn "{ADMIN_DN}"
rootpw {ADMIN_PW}
directory {d}/data
access to attrs=userPassword by self write by anonymous auth by * none
access to * by * read
"#
        );
        std::fs::write(dir.path().join("slapd.conf"), conf).unwrap();
        let mut s = Slapd {
            ldap: format!("127.0.0.1:{}", free_port()),
            ldaps: format!("127.0.0.1:{}", free_port()),
            ca_file,
            dir,
            child: None,
        };
        // A port picked free can be taken by another test's server before slapd binds it: pick again.
        for attempt in 1.. {
            match s.run().await {
                Ok(()) => break,
                Err(log) if attempt < 5 => {
                    eprintln!("slapd did not start (attempt {attempt}), new ports: {log}");
                    s.ldap = format!("127.0.0.1:{}", free_port());
                    s.ldaps = format!("127.0.0.1:{}", free_port());
                }
                Err(log) => panic!("slapd did not start: {log}"),
            }
        }
        s.seed().await;
        s
    }

    /// Starts slapd and waits until both listeners accept; `Err` with its log when it exits first.
    async fn run(&mut self) -> Result<(), String> {
        let log = std::fs::File::create(self.dir.path().join("slapd.log")).unwrap();
        let child = Command::new(slapd_binary())
            .arg("-f")
            .arg(self.dir.path().join("slapd.conf"))
            .arg("-h")
            .arg(format!("ldap://{}/ ldaps://{}/", self.ldap, self.ldaps))
            // -d keeps slapd in the foreground, so the test owns the process.
            .args(["-d", "0"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                let log = std::fs::read_to_string(self.dir.path().join("slapd.log")).unwrap_or_default();
                self.child = None;
                return Err(format!("slapd exited with {status}: {log}"));
            }
            if tokio::net::TcpStream::connect(&self.ldap).await.is_ok()
                && tokio::net::TcpStream::connect(&self.ldaps).await.is_ok()
            {
                return Ok(());
            }
            assert!(Instant::now() < deadline, "slapd did not listen within 30 s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops slapd (the database stays).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts slapd again on the same ports and database.
    pub async fn restart(&mut self) {
        self.stop();
        self.run().await.unwrap_or_else(|log| panic!("{log}"));
    }

    /// A connection bound as the directory's administrator.
    pub async fn admin(&self) -> ldap3::Ldap {
        let (conn, mut ldap) =
            LdapConnAsync::with_settings(LdapConnSettings::new(), &format!("ldap://{}", self.ldap)).await.unwrap();
        ldap3::drive!(conn);
        ldap.simple_bind(ADMIN_DN, ADMIN_PW).await.unwrap().success().unwrap();
        ldap
    }

    /// Adds an entry: `attrs` as (name, values).
    pub async fn add(&self, dn: &str, attrs: &[(&str, &[&str])]) {
        let attrs: Vec<(&str, std::collections::HashSet<&str>)> =
            attrs.iter().map(|(k, v)| (*k, v.iter().copied().collect())).collect();
        let mut l = self.admin().await;
        l.add(dn, attrs).await.unwrap().success().unwrap_or_else(|e| panic!("adding {dn}: {e}"));
    }

    /// Removes `value` from attribute `attr` of `dn` (what `ldapmodify` with `delete:` does).
    pub async fn remove_value(&self, dn: &str, attr: &str, value: &str) {
        let mut l = self.admin().await;
        l.modify(dn, vec![Mod::Delete(attr, [value].into_iter().collect())]).await.unwrap().success().unwrap();
    }

    /// Deletes an entry.
    pub async fn delete(&self, dn: &str) {
        let mut l = self.admin().await;
        l.delete(dn).await.unwrap().success().unwrap();
    }

    async fn seed(&self) {
        self.add(SUFFIX, &[("objectClass", &["dcObject", "organization"]), ("dc", &["example"]), ("o", &["Example"])])
            .await;
        for ou in ["people", "groups", "services"] {
            self.add(&format!("ou={ou},{SUFFIX}"), &[("objectClass", &["organizationalUnit"]), ("ou", &[ou])]).await;
        }
        self.add(
            SERVICE_DN,
            &[
                ("objectClass", &["organizationalRole", "simpleSecurityObject"]),
                ("cn", &["dex"]),
                ("userPassword", &[SERVICE_PW]),
            ],
        )
        .await;
    }

    /// Adds a person under `ou=people` with `password`; returns the DN.
    pub async fn add_user(&self, uid: &str, mail: &str, name: &str, password: &str) -> String {
        let dn = format!("uid={},ou=people,{SUFFIX}", ldap3::dn_escape(uid));
        self.add(
            &dn,
            &[
                ("objectClass", &["inetOrgPerson"]),
                ("uid", &[uid]),
                ("cn", &[name]),
                ("sn", &[name]),
                ("mail", &[mail]),
                ("userPassword", &[password]),
            ],
        )
        .await;
        dn
    }

    /// Adds a `groupOfNames` under `ou=groups` with these member DNs; returns the DN.
    pub async fn add_group(&self, cn: &str, members: &[&str]) -> String {
        let dn = format!("cn={cn},ou=groups,{SUFFIX}");
        self.add(&dn, &[("objectClass", &["groupOfNames"]), ("cn", &[cn]), ("member", members)]).await;
        dn
    }

    pub fn ca_path(&self) -> &Path {
        &self.ca_file
    }
}

impl Drop for Slapd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A development CA and a certificate for 127.0.0.1 signed by it; returns the CA file.
fn write_certs(dir: &Path) -> PathBuf {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.distinguished_name.push(DnType::CommonName, "slapd test CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages =
        vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    let ca_key = KeyPair::generate().unwrap();
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let mut params = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
    params.distinguished_name.push(DnType::CommonName, "127.0.0.1");
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
    std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
    std::fs::write(dir.join("cert.pem"), cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), key.serialize_pem()).unwrap();
    dir.join("ca.pem")
}
