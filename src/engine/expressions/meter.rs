//! The counter one evaluation pays into, the functions the rewritten expression calls to pay,
//! and the size of a value as the budget counts it.

use super::*;

/// The counter every charge of one evaluation pays into.
#[derive(Default)]
pub(super) struct Meter {
    pub(super) spent: AtomicU64,
}

pub(super) type Function = Box<
    dyn for<'c, 'v> Fn(&mut FunctionContext<'c, 'v>) -> Result<CowVal<'c, 'v>, ExecutionError>
        + Send
        + Sync,
>;

impl Meter {
    pub(super) fn reset(&self) {
        self.spent.store(0, Ordering::Relaxed);
    }

    pub(super) fn over(&self) -> bool {
        self.spent.load(Ordering::Relaxed) > COST_BUDGET
    }

    pub(super) fn left(&self) -> u64 {
        COST_BUDGET.saturating_sub(self.spent.load(Ordering::Relaxed))
    }

    /// Pays `units`; an error once the budget is passed (and at once for every later charge).
    pub(super) fn charge(&self, units: u64) -> Result<(), ExecutionError> {
        if self.over() {
            return Err(over_budget());
        }
        let spent = self.spent.load(Ordering::Relaxed).saturating_add(units);
        self.spent.store(spent, Ordering::Relaxed);
        if spent > COST_BUDGET { Err(over_budget()) } else { Ok(()) }
    }

    /// Pays the size of `value`, measured no further than the budget left.
    pub(super) fn charge_size(&self, value: &dyn Val) -> Result<(), ExecutionError> {
        if self.over() {
            return Err(over_budget());
        }
        self.charge(size(value, self.left()))
    }

    /// Registers the charging functions in `context`, `matches` with `patterns`.
    pub(super) fn install(
        self: &Arc<Self>,
        context: &mut Context,
        patterns: Arc<HashMap<String, regex::Regex>>,
    ) -> Result<(), cel::DeclarationError> {
        let meter = self.clone();
        let charge: Function = Box::new(move |call| {
            let value = call.args.pop().ok_or_else(ExecutionError::missing_argument_or_target)?;
            meter.charge_size(value.as_ref())?;
            Ok(value)
        });
        context.add_function(CHARGE, charge)?;
        let meter = self.clone();
        let charge_flat: Function = Box::new(move |call| {
            let value = call.args.pop().ok_or_else(ExecutionError::missing_argument_or_target)?;
            let units = match value.downcast_ref::<CelString>() {
                Some(text) => 1 + text.inner().len() as u64 / STRING_BYTES_PER_UNIT,
                None => 1,
            };
            meter.charge(units)?;
            Ok(value)
        });
        context.add_function(CHARGE_FLAT, charge_flat)?;
        let meter = self.clone();
        let range: Function = Box::new(move |call| {
            let weight = call
                .args
                .pop()
                .and_then(|weight| weight.downcast_ref::<CelInt>().map(|weight| *weight.inner()))
                .ok_or_else(ExecutionError::missing_argument_or_target)?;
            let range = call.args.pop().ok_or_else(ExecutionError::missing_argument_or_target)?;
            let length = range.as_sizer().map_or(0, |sizer| *sizer.size().inner());
            let steps = u64::try_from(length.saturating_mul(weight)).unwrap_or(u64::MAX);
            meter.charge(steps)?;
            meter.charge_size(range.as_ref())?;
            Ok(range)
        });
        context.add_function(RANGE, range)?;
        let meter = self.clone();
        let matches: Function = Box::new(move |call| {
            let pattern = call.args.pop().ok_or_else(ExecutionError::missing_argument_or_target)?;
            let subject = call.args.pop().ok_or_else(ExecutionError::missing_argument_or_target)?;
            let (Some(subject), Some(pattern)) =
                (subject.downcast_ref::<CelString>(), pattern.downcast_ref::<CelString>())
            else {
                return Err(ExecutionError::no_such_member_overload(
                    "matches",
                    vec![
                        subject.get_type().name().to_owned(),
                        pattern.get_type().name().to_owned(),
                    ],
                ));
            };
            let (subject, pattern) = (subject.inner(), pattern.inner());
            // Kubernetes' worst case for a regular expression: a tenth of the string's length
            // times a quarter of the pattern's.
            let units =
                (1 + subject.len() as u64 / 10).saturating_mul(1 + pattern.len() as u64 / 4);
            meter.charge(units)?;
            let regex = patterns.get(pattern).ok_or_else(|| {
                ExecutionError::function_error("matches", "pattern not compiled beforehand")
            })?;
            Ok(CowVal::owned(CelBool::from(regex.is_match(subject))))
        });
        context.add_function(MATCHES, matches)
    }
}

pub(super) fn over_budget() -> ExecutionError {
    ExecutionError::function_error("cost budget", format!("exceeds {COST_BUDGET} units"))
}

/// The size of `value` in units (see the module's header), counted no further than `cap`: a
/// result above `cap` means "more than `cap`". Walks without recursion, and never holds more
/// pending values than the units left.
pub(super) fn size(value: &dyn Val, cap: u64) -> u64 {
    let mut units: u64 = 0;
    let mut pending: Vec<&dyn Val> = vec![value];
    while let Some(value) = pending.pop() {
        units = units.saturating_add(1);
        if let Some(list) = value.downcast_ref::<CelList>() {
            if units.saturating_add((pending.len() + list.inner().len()) as u64) > cap {
                return cap.saturating_add(1);
            }
            pending.extend(list.inner().iter().map(AsRef::as_ref));
        } else if let Some(map) = value.downcast_ref::<CelMap>() {
            if units.saturating_add((pending.len() + 2 * map.inner().len()) as u64) > cap {
                return cap.saturating_add(1);
            }
            for (key, value) in map.inner() {
                pending.push(key.inner());
                pending.push(value.as_ref());
            }
        } else if let Some(text) = value.downcast_ref::<CelString>() {
            units = units.saturating_add(text.inner().len() as u64 / STRING_BYTES_PER_UNIT);
        } else if let Some(bytes) = value.downcast_ref::<CelBytes>() {
            units = units.saturating_add(bytes.inner().len() as u64 / STRING_BYTES_PER_UNIT);
        } else if let Some(optional) = value.downcast_ref::<CelOptional>() {
            pending.extend(optional.inner());
        } else if let Some(sizer) = value.as_sizer() {
            // A container of another kind: its elements at one unit each.
            units = units.saturating_add(u64::try_from(*sizer.size().inner()).unwrap_or(0));
        }
        if units > cap {
            return units;
        }
    }
    units
}
