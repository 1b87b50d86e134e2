//! One query in, one decision out: the pure heart of the server, fuzzed by tests/hostile.rs.

use std::net::{IpAddr, SocketAddr};

use hickory_proto::op::{Edns, Message, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, PTR};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};

use crate::model::{Index, Lookup, NetId, Via};

/// What to do with one received packet.
#[derive(Debug, PartialEq, Eq)]
pub enum Reply {
    /// Send these bytes back.
    Answer(Vec<u8>),
    /// Not ours: forward the packet as it is to these resolvers (`None`: the node's).
    Forward(Option<Vec<SocketAddr>>),
    /// Not worth an answer (too short to echo an id, or a response, which could loop).
    Drop,
}

/// Largest UDP answer to a query without EDNS (RFC 1035).
const PLAIN_UDP: usize = 512;
/// Largest UDP answer we send even when EDNS allows more (the DNS flag day 2020 figure).
const EDNS_UDP: u16 = 1232;
const HEADER: usize = 12;

/// Decide the reply to `packet`, which arrived `via` from `source` (`tcp`: no size limit).
pub fn respond(
    index: &Index,
    via: &Via,
    source: IpAddr,
    packet: &[u8],
    ttl: u32,
    tcp: bool,
) -> Reply {
    if packet.len() < HEADER || packet[2] & 0x80 != 0 {
        return Reply::Drop;
    }
    let id = u16::from_be_bytes([packet[0], packet[1]]);
    let Ok(request) = Message::from_vec(packet) else {
        return error(id, OpCode::Query, ResponseCode::FormErr);
    };
    let op = request.metadata.op_code;
    if op != OpCode::Query {
        return error(id, op, ResponseCode::NotImp);
    }
    let [query] = request.queries.as_slice() else {
        return error(id, op, ResponseCode::FormErr);
    };
    let nets = index.asker_networks(via, source);
    if nets.is_empty() || query.query_class() != DNSClass::IN {
        return answer(&request, query, ResponseCode::Refused, Vec::new(), tcp);
    }
    let mut qname = query.name().to_ascii();
    qname.make_ascii_lowercase();
    let qname = qname.strip_suffix('.').unwrap_or(&qname);

    let records = match reverse_address(query.name()) {
        Some(addr) => match index.pointer(&nets, addr) {
            Lookup::Found(names) => pointer_records(query, &names, ttl),
            Lookup::NotOnAskersNetworks => Err(ResponseCode::NXDomain),
            Lookup::Elsewhere if matches!(via, Via::Cluster(_)) => Err(ResponseCode::Refused),
            Lookup::Elsewhere => return forward(index, &nets, &request, query, tcp),
        },
        None if matches!(via, Via::Cluster(_)) => match index.lookup_qualified(qname) {
            Lookup::Found(addrs) => Ok(address_records(query, &addrs, ttl)),
            Lookup::NotOnAskersNetworks => Err(ResponseCode::NXDomain),
            // Cluster DNS has resolvers of its own.
            Lookup::Elsewhere => Err(ResponseCode::Refused),
        },
        None => match index.lookup(&nets, qname) {
            Lookup::Found(addrs) => Ok(address_records(query, &addrs, ttl)),
            Lookup::NotOnAskersNetworks => Err(ResponseCode::NXDomain),
            Lookup::Elsewhere => return forward(index, &nets, &request, query, tcp),
        },
    };
    match records {
        Ok(records) => answer(&request, query, ResponseCode::NoError, records, tcp),
        Err(code) => answer(&request, query, code, Vec::new(), tcp),
    }
}

/// Forward, unless every network of the asker is internal: then REFUSED ("I will not"),
/// not NXDOMAIN ("it does not exist"), which stubs and caches would remember as a fact.
fn forward(index: &Index, nets: &[NetId], request: &Message, query: &Query, tcp: bool) -> Reply {
    match index.upstreams(nets) {
        Some(upstreams) => Reply::Forward(upstreams.map(<[SocketAddr]>::to_vec)),
        None => answer(request, query, ResponseCode::Refused, Vec::new(), tcp),
    }
}

/// The address in a `*.in-addr.arpa` / `*.ip6.arpa` name, when it names one whole address.
fn reverse_address(name: &Name) -> Option<IpAddr> {
    let net = name.parse_arpa_name().ok()?;
    (net.prefix_len() == net.max_prefix_len()).then(|| net.addr())
}

fn address_records(query: &Query, addrs: &[&[IpAddr]], ttl: u32) -> Vec<Record> {
    let mut seen: Vec<IpAddr> = Vec::new();
    let mut records = Vec::new();
    for a in addrs.iter().flat_map(|s| s.iter()) {
        if seen.contains(a) {
            continue;
        }
        seen.push(*a);
        let rdata = match (query.query_type(), a) {
            (RecordType::A | RecordType::ANY, IpAddr::V4(v4)) => RData::A(A(*v4)),
            (RecordType::AAAA | RecordType::ANY, IpAddr::V6(v6)) => RData::AAAA(AAAA(*v6)),
            _ => continue,
        };
        records.push(Record::from_rdata(query.name().clone(), ttl, rdata));
    }
    records
}

fn pointer_records(
    query: &Query,
    names: &[&[Box<str>]],
    ttl: u32,
) -> Result<Vec<Record>, ResponseCode> {
    if !matches!(query.query_type(), RecordType::PTR | RecordType::ANY) {
        return Ok(Vec::new());
    }
    let mut records = Vec::new();
    for n in names.iter().flat_map(|s| s.iter()) {
        let target = Name::from_ascii(n).map_err(|_| ResponseCode::ServFail)?;
        records.push(Record::from_rdata(
            query.name().clone(),
            ttl,
            RData::PTR(PTR(target)),
        ));
    }
    Ok(records)
}

fn answer(
    request: &Message,
    query: &Query,
    code: ResponseCode,
    records: Vec<Record>,
    tcp: bool,
) -> Reply {
    let mut msg = Message::response(request.metadata.id, OpCode::Query);
    msg.metadata.recursion_desired = request.metadata.recursion_desired;
    msg.metadata.recursion_available = true;
    msg.metadata.authoritative = code != ResponseCode::Refused;
    msg.metadata.response_code = code;
    msg.add_query(query.clone());
    msg.insert_answers(records);
    let limit = match &request.edns {
        Some(edns) => {
            let mut ours = Edns::new();
            ours.set_max_payload(EDNS_UDP);
            msg.set_edns(ours);
            usize::from(edns.max_payload().clamp(PLAIN_UDP as u16, EDNS_UDP))
        }
        None => PLAIN_UDP,
    };
    match msg.to_vec() {
        Ok(bytes) if tcp || bytes.len() <= limit => Reply::Answer(bytes),
        // Too big for UDP: the client retries over TCP (RFC 7766).
        Ok(_) => msg.truncate().to_vec().map_or(Reply::Drop, Reply::Answer),
        Err(_) => error(request.metadata.id, OpCode::Query, ResponseCode::ServFail),
    }
}

/// A bare header answer, for requests we could not (or will not) read further.
fn error(id: u16, op: OpCode, code: ResponseCode) -> Reply {
    Message::error_msg(id, op, code)
        .to_vec()
        .map_or(Reply::Drop, Reply::Answer)
}

/// A SERVFAIL for a query whose forwarding failed (no resolver answered, too many waiting).
pub fn server_failure(packet: &[u8]) -> Option<Vec<u8>> {
    empty_answer(packet, ResponseCode::ServFail, false)
}

/// An empty answer with the TC bit: "ask again over TCP".
pub fn truncated(packet: &[u8]) -> Option<Vec<u8>> {
    empty_answer(packet, ResponseCode::NoError, true)
}

fn empty_answer(packet: &[u8], code: ResponseCode, truncation: bool) -> Option<Vec<u8>> {
    let request = Message::from_vec(packet).ok()?;
    let query = request.queries.first()?;
    let Reply::Answer(bytes) = answer(&request, query, code, Vec::new(), true) else {
        return None;
    };
    let mut msg = Message::from_vec(&bytes).ok()?;
    msg.metadata.truncation = truncation;
    msg.metadata.authoritative = false;
    msg.to_vec().ok()
}
