//! The roles of columns (csv, reordered zk-attlog) and named groups (pattern), from `columns` or from
//! a header row.

use super::*;

/// The meaning of a column (csv, reordered zk-attlog) or of a named group (pattern).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Role {
    User = 0,
    Time = 1,
    Date = 2,
    State = 3,
    Verify = 4,
    Workcode = 5,
}

/// Number of [`Role`]s.
pub(super) const ROLES: usize = 6;

impl Role {
    pub(super) const ALL: [Role; ROLES] = [
        Role::User,
        Role::Time,
        Role::Date,
        Role::State,
        Role::Verify,
        Role::Workcode,
    ];

    pub(super) fn name(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Time => "time",
            Role::Date => "date",
            Role::State => "state",
            Role::Verify => "verify",
            Role::Workcode => "workcode",
        }
    }

    /// A name in `columns` (case-insensitive); anything else (`""`, `skip`, `name`...) is ignored.
    pub(super) fn from_config(name: &str) -> Option<Role> {
        let name = name.trim();
        Role::ALL
            .into_iter()
            .find(|r| r.name().eq_ignore_ascii_case(name))
    }

    /// A header cell (`header = true`): the role names and their aliases, compared case-insensitively
    /// with spaces, `_`, `-`, `.` and `/` removed (so `User ID`, `user_id` and `UserID` are alike).
    pub(super) fn from_header(cell: &str) -> Option<Role> {
        let norm: String = cell
            .chars()
            .filter(|c| !matches!(c, ' ' | '_' | '-' | '.' | '/' | '\u{3000}'))
            .flat_map(char::to_lowercase)
            .collect();
        Some(match norm.as_str() {
            "user" | "pin" | "userid" | "uid" | "id" | "acno" | "badge" | "badgenumber"
            | "badgeno" | "employee" | "employeeid" | "employeeno" | "empno" | "staffid"
            | "personid" | "enrollnumber" | "enrollno" | "工号" | "用户" | "用户id" | "用户号"
            | "人员编号" | "员工编号" | "考勤号" | "考勤号码" | "编号" => {
                Role::User
            }
            "time" | "datetime" | "checktime" | "punchtime" | "clocktime" | "logtime"
            | "timestamp" | "attendancetime" | "时间" | "打卡时间" | "考勤时间" | "日期时间"
            | "签到时间" | "刷卡时间" => Role::Time,
            "date" | "day" | "日期" | "打卡日期" | "考勤日期" => Role::Date,
            "state" | "status" | "checktype" | "punchstate" | "attstate" | "inout"
            | "direction" | "event" | "状态" | "考勤状态" | "打卡状态" | "打卡类型" | "方向"
            | "进出" => Role::State,
            "verify" | "verifycode" | "verifymode" | "verifytype" | "verification" | "验证方式"
            | "验证类型" | "比对方式" => Role::Verify,
            "workcode" | "工作代码" | "工作号" => Role::Workcode,
            _ => return None,
        })
    }
}

/// Where each role is in a line split into columns.
#[derive(Clone, Debug)]
pub(super) struct Columns {
    /// Each role's 0-based column.
    pub(super) at: [Option<usize>; ROLES],
    /// The role of each column up to the last one that has a role.
    pub(super) roles: Vec<Option<Role>>,
}

impl Columns {
    pub(super) fn from_roles(at: [Option<usize>; ROLES]) -> Columns {
        let len = at.iter().flatten().max().map_or(0, |&m| m + 1);
        let mut roles = vec![None; len];
        for r in Role::ALL {
            if let Some(c) = at[r as usize] {
                roles[c] = Some(r);
            }
        }
        Columns { at, roles }
    }

    /// The zk-attlog order: user, time, state, verify, workcode.
    pub(super) fn zk_default() -> Columns {
        Columns::from_roles([Some(0), Some(1), None, Some(2), Some(3), Some(4)])
    }

    /// From `columns`: each role at most once, user and time required.
    pub(super) fn from_config(names: &[String]) -> Result<Columns, FormatError> {
        let mut at = [None; ROLES];
        for (i, name) in names.iter().enumerate() {
            let Some(role) = Role::from_config(name) else {
                continue;
            };
            if let Some(first) = at[role as usize] {
                return Err(FormatError::new(
                    "columns",
                    format!(
                        "names {} twice (columns {} and {})",
                        role.name(),
                        first + 1,
                        i + 1
                    ),
                ));
            }
            at[role as usize] = Some(i);
        }
        for role in [Role::User, Role::Time] {
            if at[role as usize].is_none() {
                return Err(FormatError::new(
                    "columns",
                    format!(
                        "has no {} column: name the columns in order with user, time, date, state, \
                         verify, workcode (\"\" or \"skip\" for a column to ignore)",
                        role.name()
                    ),
                ));
            }
        }
        Ok(Columns::from_roles(at))
    }

    /// From the cells of a header row: the first cell naming a role wins; user and time required.
    pub(super) fn from_header<'a>(
        cells: impl Iterator<Item = &'a str>,
        unix: bool,
    ) -> Result<Columns, ParseError> {
        let mut at = [None; ROLES];
        for (i, cell) in cells.enumerate() {
            let cell = clean_csv(cell);
            let cell = cell.strip_prefix('\u{feff}').unwrap_or(cell);
            match Role::from_header(cell) {
                // Unix seconds are a whole date and time: a date column is not needed
                Some(Role::Date) if unix => {}
                Some(r) if at[r as usize].is_none() => at[r as usize] = Some(i),
                _ => {}
            }
        }
        let missing = match (at[Role::User as usize], at[Role::Time as usize]) {
            (None, None) => Some("user or time"),
            (None, _) => Some("user"),
            (_, None) => Some("time"),
            _ => None,
        };
        match missing {
            Some(missing) => Err(ParseError::NoHeader { missing }),
            None => Ok(Columns::from_roles(at)),
        }
    }

    /// Index of the last column with a role.
    pub(super) fn last(&self) -> usize {
        self.roles.len().saturating_sub(1)
    }

    /// The first required column (user, time, date) a line of `found` fields lacks.
    pub(super) fn check_found(&self, found: usize) -> Result<(), ParseError> {
        for role in [Role::User, Role::Time, Role::Date] {
            if let Some(c) = self.at[role as usize] {
                if c >= found {
                    return Err(ParseError::TooFewFields {
                        found,
                        role: role.name(),
                        column: c + 1,
                    });
                }
            }
        }
        Ok(())
    }
}
