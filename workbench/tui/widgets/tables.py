"""Small helpers over Textual's DataTable shared by the screens."""

from __future__ import annotations

from textual.widgets import DataTable


def cursor_key(table: DataTable) -> str | None:
    """The key of the row under the cursor, or None when there is none."""
    if not table.row_count:
        return None
    try:
        return table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
    except Exception:  # the cursor is past the rows while they are being rebuilt
        return None


def show_rows(table: DataTable, rows: dict[str, list], columns: list[str], keep: str | None) -> None:
    """Bring `table` to `rows` (row key -> cells, in order; `columns` the column keys): when
    the rows are the same ones in the same order, only changed cells are updated (no flicker,
    the cursor stays); otherwise the table is rebuilt with the cursor back on row `keep`."""
    keys = list(rows)
    if [row.key.value for row in table.ordered_rows] == keys:
        for key in keys:
            for column, value in zip(columns, rows[key]):
                if str(table.get_cell(key, column)) != str(value):
                    table.update_cell(key, column, value, update_width=True)
        return
    table.clear()
    for key in keys:
        table.add_row(*rows[key], key=key)
    if keep in keys:
        table.move_cursor(row=keys.index(keep), animate=False)
