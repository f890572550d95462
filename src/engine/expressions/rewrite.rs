//! Parsing within bounds, and the rewrite that makes an expression pay for its work before it
//! does it (see the parent module's header for the budget and why it is counted this way).

use super::*;

/// An expression parsed within bounds and rewritten to pay for its work.
pub(super) struct Prepared<'a> {
    pub(super) source: &'a str,
    pub(super) expression: IdedExpr,
    /// Nodes of `expression`, wrappers included: the cost of evaluating each once.
    pub(super) nodes: u64,
    /// The `matches` patterns, compiled.
    pub(super) patterns: HashMap<String, regex::Regex>,
}

/// Parses `source` within the bounds of the module's header and instruments it; the error is
/// the reason, naming the bound.
pub(super) fn prepare(source: &str) -> Result<Prepared<'_>, String> {
    if source.len() > MAX_EXPRESSION_BYTES {
        return Err(format!(
            "is {} bytes long, more than the {MAX_EXPRESSION_BYTES} allowed",
            source.len()
        ));
    }
    let mut open = 0usize;
    for byte in source.bytes() {
        match byte {
            b'(' | b'[' | b'{' => {
                open += 1;
                if open > MAX_NESTING {
                    return Err(format!(
                        "nests more than {MAX_NESTING} brackets deep (strings included)"
                    ));
                }
            }
            b')' | b']' | b'}' => open = open.saturating_sub(1),
            _ => {}
        }
    }
    let max_depth = u16::try_from(MAX_DEPTH).unwrap_or(u16::MAX);
    let mut expression = Parser::new()
        .max_recursion_depth(max_depth)
        .parse(source)
        .map_err(|error| error.to_string())?;
    let mut instrument = Instrument::default();
    instrument.visit(&mut expression, 0)?;
    Ok(Prepared {
        source,
        expression,
        nodes: instrument.nodes as u64,
        patterns: instrument.patterns,
    })
}

/// Rewrites a parsed expression so that it pays into the [`Meter`] (see the module's header),
/// refusing what exceeds the static bounds on the way.
#[derive(Default)]
pub(super) struct Instrument {
    pub(super) nodes: usize,
    pub(super) patterns: HashMap<String, regex::Regex>,
    /// The variables in scope: `self`, and the loop variables of the enclosing comprehensions.
    pub(super) variables: Vec<String>,
    /// The accumulators of the enclosing comprehensions: a `map` or `filter` step appending to
    /// its accumulator is left as the interpreter recognizes it (it then appends in place).
    pub(super) accumulators: Vec<String>,
}

impl Instrument {
    pub(super) fn visit(&mut self, expr: &mut IdedExpr, depth: usize) -> Result<(), String> {
        if depth > MAX_DEPTH {
            return Err(format!("nests more than {MAX_DEPTH} levels deep once parsed"));
        }
        self.count(1)?;
        match &mut expr.expr {
            Expr::Unspecified | Expr::Literal(_) | Expr::Ident(_) => {}
            Expr::Select(select) => self.visit(&mut select.operand, depth + 1)?,
            Expr::Call(call) => self.call(call, depth)?,
            Expr::List(list) => {
                for element in &mut list.elements {
                    self.visit(element, depth + 1)?;
                    self.wrap(element, CHARGE)?;
                }
            }
            Expr::Map(map) => {
                for entry in &mut map.entries {
                    match &mut entry.expr {
                        EntryExpr::MapEntry(entry) => {
                            self.visit(&mut entry.key, depth + 1)?;
                            self.wrap(&mut entry.key, CHARGE)?;
                            self.visit(&mut entry.value, depth + 1)?;
                            self.wrap(&mut entry.value, CHARGE)?;
                        }
                        EntryExpr::StructField(field) => {
                            self.visit(&mut field.value, depth + 1)?;
                            self.wrap(&mut field.value, CHARGE)?;
                        }
                    }
                }
            }
            Expr::Struct(structure) => {
                for entry in &mut structure.entries {
                    match &mut entry.expr {
                        EntryExpr::MapEntry(entry) => {
                            self.visit(&mut entry.value, depth + 1)?;
                            self.wrap(&mut entry.value, CHARGE)?;
                        }
                        EntryExpr::StructField(field) => {
                            self.visit(&mut field.value, depth + 1)?;
                            self.wrap(&mut field.value, CHARGE)?;
                        }
                    }
                }
            }
            Expr::Comprehension(comprehension) => {
                self.visit(&mut comprehension.accu_init, depth + 1)?;
                self.visit(&mut comprehension.iter_range, depth + 1)?;
                let before = self.nodes;
                let scope = self.variables.len();
                self.variables.push(comprehension.iter_var.clone());
                self.variables.extend(comprehension.iter_var2.clone());
                self.accumulators.push(comprehension.accu_var.clone());
                let body = self
                    .visit(&mut comprehension.loop_cond, depth + 1)
                    .and_then(|()| self.visit(&mut comprehension.loop_step, depth + 1))
                    .and_then(|()| self.visit(&mut comprehension.result, depth + 1));
                self.variables.truncate(scope);
                self.accumulators.pop();
                body?;
                // Each iteration evaluates the condition and the step once (the result once more
                // at the end: counted in, to keep the figure simple and above the truth).
                let weight = (self.nodes - before + 1) as i64;
                let range = std::mem::take(&mut comprehension.iter_range);
                comprehension.iter_range = self.call_of(RANGE, vec![range, int(weight)])?;
            }
        }
        Ok(())
    }

    pub(super) fn call(&mut self, call: &mut CallExpr, depth: usize) -> Result<(), String> {
        let name = call.func_name.as_str();
        // Constant work on their operands, which are paid for where they are built.
        let free = [
            operators::LOGICAL_AND,
            operators::LOGICAL_OR,
            operators::LOGICAL_NOT,
            operators::CONDITIONAL,
            operators::NOT_STRICTLY_FALSE,
            operators::NEGATE,
        ];
        if free.contains(&name) {
            return self.operands(call, depth);
        }
        if name == "matches" {
            return self.matches(call, depth);
        }
        // The step `@result + [x]` of a `map` or `filter`: left as it is, its list is paid for
        // element by element as any list literal.
        let appends = name == operators::ADD
            && call.target.is_none()
            && matches!(call.args.first(), Some(IdedExpr { expr: Expr::Ident(accumulator), .. })
                if self.accumulators.contains(accumulator));
        if appends {
            return self.operands(call, depth);
        }
        let flat = name == "size" || name == operators::INDEX || name == operators::OPT_INDEX;
        let charge = if flat { CHARGE_FLAT } else { CHARGE };
        if let Some(target) = &mut call.target {
            self.visit(target, depth + 1)?;
            // `optional.of(x)` is a call of `optional.of`, not a method of a value: only a
            // target that is a value pays.
            if self.is_value(target) {
                self.wrap(target, charge)?;
            }
        }
        for (position, argument) in call.args.iter_mut().enumerate() {
            self.visit(argument, depth + 1)?;
            // `list[i]`: the index is a scalar.
            if !(flat && position > 0) {
                self.wrap(argument, charge)?;
            }
        }
        Ok(())
    }

    pub(super) fn operands(&mut self, call: &mut CallExpr, depth: usize) -> Result<(), String> {
        if let Some(target) = &mut call.target {
            self.visit(target, depth + 1)?;
        }
        for argument in &mut call.args {
            self.visit(argument, depth + 1)?;
        }
        Ok(())
    }

    /// `s.matches('re')` or `matches(s, 're')` becomes `@matches(s, 're')`, its pattern compiled
    /// here: a pattern must be a literal, so that its size is known before it runs.
    pub(super) fn matches(&mut self, call: &mut CallExpr, depth: usize) -> Result<(), String> {
        let mut operands: Vec<IdedExpr> =
            call.target.take().map(|target| *target).into_iter().collect();
        operands.append(&mut call.args);
        let [mut subject, pattern] = <[IdedExpr; 2]>::try_from(operands)
            .map_err(|_| "`matches` takes a string and a pattern".to_owned())?;
        let Expr::Literal(LiteralValue::String(text)) = &pattern.expr else {
            return Err("`matches` takes a pattern written as a string literal".to_owned());
        };
        let text = text.inner().to_owned();
        if let std::collections::hash_map::Entry::Vacant(entry) = self.patterns.entry(text) {
            let text = entry.key();
            let regex = regex::RegexBuilder::new(text)
                .size_limit(MAX_REGEX_BYTES)
                .dfa_size_limit(MAX_REGEX_BYTES)
                .build()
                .map_err(|error| format!("pattern `{text}`: {error}"))?;
            entry.insert(regex);
        }
        self.visit(&mut subject, depth + 1)?;
        self.count(1)?;
        *call =
            CallExpr { func_name: MATCHES.to_owned(), target: None, args: vec![subject, pattern] };
        Ok(())
    }

    /// Whether `expr` is a value rather than the qualifier of a function's name: anything but
    /// a name whose root is not a variable.
    pub(super) fn is_value(&self, expr: &IdedExpr) -> bool {
        let mut root = expr;
        loop {
            match &root.expr {
                Expr::Ident(name) => {
                    return name == "self"
                        || self.variables.iter().any(|variable| variable == name);
                }
                Expr::Select(select) if !select.test => root = &select.operand,
                _ => return true,
            }
        }
    }

    /// Replaces `expr` by `function(expr)`, unless it is a literal that costs nothing to copy.
    pub(super) fn wrap(&mut self, expr: &mut IdedExpr, function: &str) -> Result<(), String> {
        let scalar = matches!(
            &expr.expr,
            Expr::Literal(literal)
                if !matches!(literal, LiteralValue::String(_) | LiteralValue::Bytes(_))
        );
        if scalar {
            return Ok(());
        }
        let inner = std::mem::take(expr);
        *expr = self.call_of(function, vec![inner])?;
        Ok(())
    }

    pub(super) fn call_of(
        &mut self,
        function: &str,
        args: Vec<IdedExpr>,
    ) -> Result<IdedExpr, String> {
        self.count(1 + args.len().saturating_sub(1))?;
        Ok(IdedExpr {
            id: 0,
            expr: Expr::Call(CallExpr { func_name: function.to_owned(), target: None, args }),
        })
    }

    pub(super) fn count(&mut self, nodes: usize) -> Result<(), String> {
        self.nodes += nodes;
        if self.nodes > MAX_NODES {
            return Err(format!("has more than {MAX_NODES} nodes once parsed"));
        }
        Ok(())
    }
}

pub(super) fn int(value: i64) -> IdedExpr {
    IdedExpr { id: 0, expr: Expr::Literal(LiteralValue::Int(value.into())) }
}
