"""The arithmetic of a worked example: a Python expression limited to numbers, names, + - * / ** and min/max/round."""

from __future__ import annotations

import ast
import operator
from collections.abc import Callable, Mapping
from typing import Any

_BINARY: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.Pow: operator.pow,
}
_UNARY: dict[type[ast.unaryop], Callable[[Any], Any]] = {ast.USub: operator.neg, ast.UAdd: operator.pos}
_FUNCTIONS: dict[str, Callable[..., Any]] = {"min": min, "max": max, "round": round, "abs": abs}


class FormulaError(ValueError):
    """The expression uses something outside the allowed arithmetic, or cannot be evaluated."""


class Formula:
    """A parsed, checked expression; :meth:`evaluate` computes it from named values."""

    def __init__(self, text: str) -> None:
        self.text = text
        try:
            self._tree = ast.parse(text, mode="eval")
        except SyntaxError as exc:
            raise FormulaError(f"not an expression: {exc.msg}") from exc
        self.names: set[str] = set()
        self._check(self._tree.body)

    def _check(self, node: ast.AST) -> None:
        if isinstance(node, ast.Constant) and isinstance(node.value, int | float) and not isinstance(node.value, bool):
            return
        if isinstance(node, ast.Name):
            self.names.add(node.id)
        elif isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
            self._check(node.left)
            self._check(node.right)
        elif isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
            self._check(node.operand)
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in _FUNCTIONS
            and not node.keywords
        ):
            for arg in node.args:
                self._check(arg)
        else:
            raise FormulaError(
                f"{ast.unparse(node)!r} is not allowed: use numbers, names, + - * / ** and {sorted(_FUNCTIONS)}"
            )

    def evaluate(self, values: Mapping[str, float]) -> float:
        missing = self.names - values.keys()
        if missing:
            raise FormulaError(f"no value for {sorted(missing)}")
        try:
            return float(self._eval(self._tree.body, values))
        except (ArithmeticError, ValueError, TypeError) as exc:
            raise FormulaError(f"{self.text}: {exc}") from exc

    def _eval(self, node: ast.AST, values: Mapping[str, float]) -> Any:
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.Name):
            return values[node.id]
        if isinstance(node, ast.BinOp):
            return _BINARY[type(node.op)](self._eval(node.left, values), self._eval(node.right, values))
        if isinstance(node, ast.UnaryOp):
            return _UNARY[type(node.op)](self._eval(node.operand, values))
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            return _FUNCTIONS[node.func.id](*(self._eval(a, values) for a in node.args))
        raise FormulaError(f"cannot evaluate {ast.unparse(node)!r}")
